"""rlm: LLM agents on real Jupyter kernels that spawn sub-agents from their own cells.

``await rlm.run(task)`` is the one entry point. Outside an rlm kernel it starts an
orchestrator and a root agent; inside one (where ``rlm`` is pre-imported) it asks the parent
orchestrator, over the signed control channel, for a child agent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlm.errors import (
    AgentError,
    ConfigError,
    DepthLimitError,
    FunctionError,
    KernelDiedError,
    KernelError,
    LlmError,
    ModelError,
    RLMError,
)

if TYPE_CHECKING:
    from rlm.agent.events import EventCallback
    from rlm.config import Settings
    from rlm.runtime.session import Session

__all__ = [
    "AgentError",
    "ConfigError",
    "DepthLimitError",
    "FunctionError",
    "KernelDiedError",
    "KernelError",
    "LlmError",
    "ModelError",
    "RLMError",
    "Session",
    "Settings",
    "__version__",
    "llm",
    "llm_batch",
    "run",
    "spawn",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Session and Settings pull in the orchestrator and pydantic: import them only when
    # used, so `import rlm` stays light inside every kernel.
    if name == "Session":
        from rlm.runtime.session import Session

        return Session
    if name == "Settings":
        from rlm.config import Settings

        return Settings
    raise AttributeError(f"module 'rlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


async def run(
    task: str,
    *,
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    max_turns: int | None = None,
    tools: list[str] | str | None = None,
    on_event: EventCallback | None = None,
    functions: list[Callable[..., Any]] | None = None,
    **settings: Any,
) -> str:
    """Run an agent on ``task`` and return its final answer.

    ``inputs`` become variables of the agent's kernel (described, not pasted, in its
    prompt). ``model``, ``max_turns`` and ``tools`` override the settings; outside a kernel
    any other setting may be overridden too (``max_depth=2``, ``base_url=...``). Raises
    ``AgentError`` when the agent ends without an answer, ``DepthLimitError`` when called
    where no sub-agent is allowed, ``ConfigError`` for bad settings. ``functions`` (outside
    a kernel) are host functions: callables of this process that every kernel of the tree
    can call as ``await name(...)`` (see ``rlm.runtime.functions``); ``mcp_config`` (a JSON
    file, or a dict ``{"mcpServers": {...}}``) adds MCP servers whose tools every kernel can
    call as ``await server.tool(...)`` (see ``rlm.runtime.mcp``).
    """
    if "rlm.inkernel" in sys.modules or "RLM_CONTROL_ADDR" in os.environ:
        from rlm import inkernel  # zmq and jupyter_client: only inside a kernel

        if inkernel.active():
            if settings or on_event is not None or functions:
                extra = (["on_event"] if on_event else []) + (["functions"] if functions else [])
                names = ", ".join(sorted([*settings, *extra]))
                raise ConfigError(
                    f"a sub-agent call only accepts model, max_turns and tools (got {names})"
                )
            return await inkernel.run(
                task, inputs=inputs, model=model, max_turns=max_turns, tools=tools
            )
    from rlm.config import load_settings
    from rlm.runtime.orchestrator import Orchestrator

    if isinstance(tools, (list, tuple)):
        tools = ",".join(tools)
    mcp = settings.pop("mcp_config") if isinstance(settings.get("mcp_config"), dict) else None
    resolved = load_settings(model=model, max_turns=max_turns, tools=tools, **settings)
    async with Orchestrator(
        resolved, on_event=on_event, functions=functions or (), mcp_config=mcp
    ) as orchestrator:
        return await orchestrator.run(task, inputs=inputs)


def _in_kernel() -> bool:
    """True inside an rlm agent's kernel (where calls go to the orchestrator)."""
    if "rlm.inkernel" in sys.modules or "RLM_CONTROL_ADDR" in os.environ:
        from rlm import inkernel  # zmq and jupyter_client: only inside a kernel

        return inkernel.active()
    return False


def _require_kernel() -> None:
    if not _in_kernel():
        raise RLMError(
            "rlm.llm and rlm.llm_batch work inside an rlm agent's kernel (the orchestrator "
            "makes the call); outside one, call your model client directly"
        )


async def llm(
    prompt: str | list[dict[str, Any]],
    *,
    system: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    json: bool = False,
) -> str:
    """One sub-model call from a cell: a model request without tools or kernel, made by the
    orchestrator (which holds the key, the limits and the log); returns the text. See
    ``rlm.inkernel.llm.llm``."""
    _require_kernel()
    from rlm.inkernel import llm as calls

    return await calls.llm(prompt, system=system, model=model, max_tokens=max_tokens, json=json)


async def llm_batch(
    prompts: list[str | list[dict[str, Any]]],
    *,
    system: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    json: bool = False,
    concurrency: int | None = None,
    return_exceptions: bool = True,
) -> list[str | LlmError]:
    """``rlm.llm`` over many prompts; answers in input order, a failed item as its
    ``rlm.LlmError`` (or raised with ``return_exceptions=False``). See
    ``rlm.inkernel.llm.llm_batch``."""
    _require_kernel()
    from rlm.inkernel import llm as calls

    return await calls.llm_batch(
        prompts,
        system=system,
        model=model,
        max_tokens=max_tokens,
        json=json,
        concurrency=concurrency,
        return_exceptions=return_exceptions,
    )


async def spawn(
    task: str | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    max_turns: int | None = None,
    tools: list[str] | str | None = None,
) -> Any:
    """A persistent sub-agent from a cell: returns a handle whose ``await child.send(msg)``
    runs one turn (kernel and history kept between sends) and ``await child.close()`` ends
    it. See ``rlm.inkernel.spawn``."""
    if not _in_kernel():
        raise RLMError(
            "rlm.spawn works inside an rlm agent's kernel; outside one, rlm.Session is the "
            "agent that keeps its kernel and history between messages"
        )
    from rlm.inkernel import spawn as spawned

    return await spawned.spawn(task, inputs=inputs, model=model, max_turns=max_turns, tools=tools)
