"""The methods a task can be answered with, side by side like the rows of the RLM paper.

- ``rlm``: the context is the kernel variable ``context`` (the ``inputs`` mechanism: the
  prompt shows its name and size, never its text) and sub-calls are allowed (``rlm.llm``,
  ``rlm.llm_batch`` and ``rlm.run``: ``RLM_MAX_DEPTH`` at least 1);
- ``rlm-no-subcalls``: the same with ``RLM_MAX_DEPTH=0``, which refuses ``rlm.llm`` and
  ``rlm.run`` (the paper's "RLM without sub-calls" ablation);
- ``direct``: one plain model call, no tools, the whole context in the user message, cut in
  the middle to fit ``--context-window`` tokens (characters / 4) when it is set; a cut task
  is reported as truncated.

Every method runs through :class:`rlm.Session`, so each task is a normal session (logged,
priced, budgeted, listed by ``rlm sessions``). A new method is a class with a ``name``, a
``description`` and ``async run(task, settings, out)``, passed to :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rlm.config import Settings, derive_settings
from rlm.errors import AgentError, ConfigError
from rlm.eval.tasks import CHARS_PER_TOKEN, Task
from rlm.runtime.session import Session

__all__ = ["METHODS", "Method", "MethodRun", "register", "truncate_middle"]

#: Tokens kept free, besides the question, for the system prompt and the answer when
#: ``direct`` cuts a context to ``--context-window``.
DIRECT_RESERVE_TOKENS = 1024

_CUT = "\n[... {:,} characters cut here to fit the context window ...]\n"


@dataclass
class MethodRun:
    """What a method got, filled in as it goes (a timeout keeps what was reached)."""

    answer: str | None = None
    reason: str | None = None
    """The stop reason (``answer``, ``max_turns``, ...), or ``timeout``."""
    error: str | None = None
    session: Path | None = None
    usage: dict[str, int | None] = field(default_factory=dict)
    cost: float = 0.0
    truncated: bool = False


class Method(Protocol):
    name: str
    description: str

    async def run(self, task: Task, settings: Settings, out: MethodRun) -> None:
        """Answer ``task`` with ``settings`` (the run's, with ``--timeout`` applied by the
        caller), filling ``out``."""


async def _converse(
    settings: Settings, message: str, out: MethodRun, inputs: dict[str, str] | None = None
) -> None:
    async with Session(settings=settings, inputs=inputs) as session:
        out.session = session.path
        try:
            out.answer = await session.send(message)
            out.reason = "answer"
        except AgentError as exc:
            out.error, out.reason = exc.message, str(exc.reason)
        finally:
            out.usage = session.usage.as_dict()
            out.cost = session.cost


_KERNEL_PROMPT = (
    "{question}\n\nThe context this question is about is the string variable `context` in "
    "your Python kernel ({chars:,} characters, about {tokens:,} tokens); it is not in this "
    "message. Examine it with code.{subcalls} When you know the answer, reply with the "
    "answer alone."
)
_SUBCALLS = (
    " You can hand parts of it to sub-model calls from your cells (`await rlm.llm(prompt)`, "
    "`await rlm.llm_batch(prompts)`), for example to read or classify chunks, and combine "
    "their answers in code."
)


def kernel_prompt(task: Task, subcalls: bool) -> str:
    """The user message of the kernel methods (the context itself is a kernel variable)."""
    return _KERNEL_PROMPT.format(
        question=task.question,
        chars=len(task.context),
        tokens=len(task.context) // CHARS_PER_TOKEN,
        subcalls=_SUBCALLS if subcalls else "",
    )


class Rlm:
    name = "rlm"
    description = "context in a kernel variable, sub-calls allowed (RLM_MAX_DEPTH >= 1)"
    subcalls = True

    async def run(self, task: Task, settings: Settings, out: MethodRun) -> None:
        depth = max(1, settings.max_depth) if self.subcalls else 0
        tools = settings.tools if "ipython" in settings.tools else (*settings.tools, "ipython")
        own = derive_settings(settings, max_depth=depth, tools=tools)
        await _converse(own, kernel_prompt(task, self.subcalls), out, {"context": task.context})


class RlmNoSubcalls(Rlm):
    name = "rlm-no-subcalls"
    description = "context in a kernel variable, no rlm.llm / rlm.run (RLM_MAX_DEPTH=0)"
    subcalls = False


def truncate_middle(text: str, chars: int) -> tuple[str, bool]:
    """``text`` cut in the middle to at most about ``chars`` characters (its start and end
    kept, as needle and question positions vary), and whether it was cut."""
    if len(text) <= chars:
        return text, False
    cut = len(text) - chars
    head = chars // 2
    return text[:head] + _CUT.format(cut) + text[len(text) - (chars - head) :], True


class Direct:
    name = "direct"
    description = "one plain model call with the whole context (cut to --context-window)"

    async def run(self, task: Task, settings: Settings, out: MethodRun) -> None:
        context = task.context
        if settings.context_window > 0:
            room = settings.context_window - DIRECT_RESERVE_TOKENS
            room -= len(task.question) // CHARS_PER_TOKEN
            context, out.truncated = truncate_middle(context, max(0, room) * CHARS_PER_TOKEN)
        # No tools, no kernel; context_window=0 so the long message is not moved into a
        # kernel variable (what rlm does with an over-long user message).
        own = derive_settings(settings, tools=(), max_depth=0, context_window=0)
        await _converse(own, f"{context}\n\n{task.question}", out)


#: The methods by name, in the order the report lists them.
METHODS: dict[str, Method] = {}


def register(method: Method) -> None:
    """Make ``method`` selectable with ``--method NAME``."""
    if not method.name or "," in method.name:
        raise ConfigError(f"a method name must be non-empty and without commas: {method.name!r}")
    METHODS[method.name] = method


for _method in (Rlm(), RlmNoSubcalls(), Direct()):
    register(_method)
