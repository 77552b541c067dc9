"""The system prompt: one template in the package, rendered per agent.

``RLM_SYSTEM_PROMPT_PATH`` replaces the rendered text and wins over
``RLM_APPEND_TO_SYSTEM_PROMPT``, which is appended otherwise.

The working directory the prompt states is where the agent's code and file tools run: the
orchestrator's for a local kernel, the kernel's own for a remote one (a gateway's, another
host's), which the kernel reports once, in its bootstrap's :data:`CWD_EXPRESSION`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from rlm.config import Settings
from rlm.errors import ConfigError

__all__ = ["CWD_EXPRESSION", "InputInfo", "PromptParts", "kernel_cwd", "render_system_prompt"]

#: Evaluated in every kernel after its bootstrap (a user expression: its value travels in
#: the execute reply): the kernel's working directory.
CWD_EXPRESSION = {"rlm_cwd": "__import__('os').getcwd()"}

_TOOL_LINES = {
    "ipython": "- `ipython`: run Python in a persistent IPython kernel (state survives between "
    "calls; `!cmd` and `%%bash` cells run shell commands).",
    "summarize": "- `summarize`: drop your oldest turns from context and keep a summary instead.",
    "bash": "- `bash`: run a shell command in a fresh `bash -c` (no state is kept between calls).",
    "edit": "- `edit`: replace exactly one occurrence of a string in a file.",
}


@dataclass
class InputInfo:
    """A variable preset in the agent's kernel: described, never shown."""

    name: str
    type: str
    size: str


@dataclass
class PromptParts:
    cwd: Path
    depth: int = 0
    skills: str = ""
    inputs: list[InputInfo] = field(default_factory=list)


def kernel_cwd(bootstrap_values: dict[str, Any]) -> Path | None:
    """The working directory a kernel reported for :data:`CWD_EXPRESSION` (None: it did not,
    e.g. its bootstrap ran without that expression)."""
    (key,) = CWD_EXPRESSION
    value = bootstrap_values.get(key)
    if not isinstance(value, dict) or value.get("status") != "ok":
        return None
    try:
        cwd = ast.literal_eval(value.get("data", {}).get("text/plain", ""))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return Path(cwd) if isinstance(cwd, str) and cwd.startswith("/") else None


def _template(name: str) -> Template:
    return Template(resources.files("rlm.agent.prompts").joinpath(name).read_text(encoding="utf-8"))


def render_system_prompt(settings: Settings, parts: PromptParts) -> str:
    if settings.system_prompt_path is not None:
        path = settings.system_prompt_path
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"RLM_SYSTEM_PROMPT_PATH: cannot read {path}: {exc}") from None
    tools = [_TOOL_LINES[name] for name in settings.tools] or ["- none: answer from what you know."]
    recursion = ""
    if "ipython" in settings.tools and parts.depth + 1 <= settings.max_depth:
        recursion = _template("recursion.md").substitute(
            depth=parts.depth, max_depth=settings.max_depth
        )
    if "ipython" in settings.tools and settings.max_depth >= 1:  # rlm.llm starts no agent
        recursion += _template("llm.md").template
    inputs = ""
    if parts.inputs:
        lines = [f"- `{i.name}`: {i.type}, {i.size}" for i in parts.inputs]
        inputs = (
            "\n## Inputs\nThese variables are already defined in your ipython kernel; "
            "inspect them with code rather than printing them whole:\n" + "\n".join(lines) + "\n"
        )
    skills = f"\n{parts.skills.strip()}\n" if parts.skills.strip() else ""
    text = _template("system.md").substitute(
        cwd=parts.cwd,
        tools="\n".join(tools),
        max_turns=f"{settings.max_turns} turn{'' if settings.max_turns == 1 else 's'}",
        recursion=recursion,
        skills=skills,
        inputs=inputs,
    )
    if settings.append_to_system_prompt:
        text = text.rstrip("\n") + "\n\n" + settings.append_to_system_prompt + "\n"
    return text
