"""What every tool is: a name, a description, a pydantic argument model and an async ``run``.

A tool lives in a module of its own under ``rlm.agent.tools`` and is listed in
``rlm.agent.tools.REGISTRY``. The agent validates the model's JSON arguments against ``Args``
before calling ``run``; a ``ToolError`` raised by ``run`` becomes the tool message the model
reads, so a tool never has to format its own error envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from rlm.agent.host import KernelHandle, ToolHost
    from rlm.config import Settings

__all__ = ["Tool", "ToolContext", "ToolResult"]


@dataclass
class ToolContext:
    """What a tool may use of the agent that calls it."""

    settings: Settings
    """The agent's settings (timeouts, enabled tools, ...)."""
    cwd: Path
    """The user's working directory; file paths are relative to it."""
    kernel: KernelHandle | None = None
    """The agent's Jupyter kernel, when the ipython tool is enabled."""
    agent: ToolHost | None = None
    """The running agent, for tools that change its live context (summarize)."""


@dataclass
class ToolResult:
    """A tool's answer with more for the log than for the model."""

    text: str
    """What the model reads."""
    log: dict[str, Any] = field(default_factory=dict)
    """Extra keys of the tool message's line in ``messages.jsonl`` (the ipython tool's
    structured ``outputs``). Never sent to the model: the live context holds the message
    without them, and a resumed context keeps only ``OPENAI_KEYS``."""


class Tool:
    """Base class of a built-in tool."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]
    caps_own_output: ClassVar[bool] = False
    """True when ``run`` already keeps its result within ``RLM_MAX_OUTPUT`` (with a note), so
    the agent must not cut it again and lose the tool's own notes."""

    def schema(self, settings: Settings) -> dict[str, Any]:
        """The OpenAI function-tool schema sent to the model."""
        parameters = self.Args.model_json_schema()
        _drop_titles(parameters)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }

    async def run(self, args: Any, ctx: ToolContext) -> str | ToolResult:
        """Do the work and return the text the model reads (or a :class:`ToolResult` with
        more for the log); raise ``ToolError`` on failure."""
        raise NotImplementedError


def _drop_titles(node: Any) -> None:
    """pydantic adds ``title`` everywhere; models do not need it, and it costs tokens."""
    if isinstance(node, dict):
        node.pop("title", None)
        for key, value in node.items():
            if key != "properties":
                _drop_titles(value)
            else:
                for prop in value.values():
                    _drop_titles(prop)
    elif isinstance(node, list):
        for item in node:
            _drop_titles(item)
