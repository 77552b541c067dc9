"""The seams around the agent loop: what an agent needs from its host, and what a tool needs
from its agent.

The orchestrator (:class:`rlm.runtime.orchestrator.Orchestrator`) is the one real host: it
holds the model client, starts kernels and owns the session tree. Keeping the loop's needs
to these small protocols lets the loop be built and tested with a fake host and a fake kernel
(``tests/test_loop.py``), without a run directory, ZeroMQ or an HTTP endpoint, and keeps the
agent from reaching into the orchestrator's fields.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rlm.agent.context import LiveContext
    from rlm.agent.events import Event
    from rlm.agent.model import ModelReply, OnDelta, OnRetry
    from rlm.kernels.kernel import ExecResult

__all__ = ["AgentHost", "KernelHandle", "ToolHost"]


class KernelHandle(Protocol):
    """What the agent and its tools use of a Jupyter kernel."""

    async def execute(self, code: str, timeout: float) -> ExecResult:
        """Run a cell; timeouts, interrupts and restarts are reported in the result."""
        ...

    async def restart(self, timeout: float = 60.0) -> None:
        """A fresh interpreter; every variable is lost."""
        ...

    async def settle(self) -> None:
        """After a cancelled ``execute``: leave the kernel idle for the next call."""
        ...

    async def shutdown(self) -> None:
        """Stop the kernel and everything it started; safe to call twice."""
        ...

    @property
    def running_cell(self) -> str | None:
        """The id of the execute request running now (None when idle): sub-agent requests
        are accepted only from the cell that is running."""
        ...


class AgentHost(Protocol):
    """What an agent needs from the process that runs it."""

    @property
    def cwd(self) -> Path:
        """The user's working directory: the kernels' and the file tools' cwd."""
        ...

    @property
    def has_skills(self) -> bool:
        """True when skills are installed: the prompt then waits for the kernel's report."""
        ...

    def emit(self, event: Event) -> None:
        """Report an event to the run's observer (never raises)."""
        ...

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        model: str,
        *,
        on_retry: OnRetry | None = None,
        on_delta: OnDelta | None = None,
    ) -> ModelReply:
        """One model request with the host's credentials, retries and limits;
        ``on_retry(attempt, attempts, wait, reason)`` hears of each retry before its wait,
        ``on_delta(kind, text)`` of each piece of streamed text."""
        ...

    async def start_kernel(
        self, agent: Any, *, needed: asyncio.Event | None = None
    ) -> KernelHandle:
        """A kernel for ``agent`` with its control secret registered. ``needed``: the start
        runs beside the agent's first model request, so the host may hold it back until that
        request is on the wire, but not once ``needed`` is set (the agent waits for it)."""
        ...

    def skills_report(self, kernel: KernelHandle) -> tuple[str, dict[str, str]]:
        """The prompt's skills section for this kernel, and skills that failed to import."""
        ...

    async def agent_ending(self, agent: Any) -> None:
        """The agent is ending (its cells are done, its kernel still up): end what it owns
        outside its cells, its spawned sub-agents."""
        ...

    def forget(self, agent: Any) -> None:
        """The agent has ended: drop it and its control secret."""
        ...

    def charge(self, model: str, usage: Any) -> float:
        """The dollars of one model call's usage, added to the run's spend (0: no price)."""
        ...


class ToolHost(Protocol):
    """What a tool may use of the agent that calls it."""

    context: LiveContext

    def log_event(self, kind: str, /, **fields: Any) -> None:
        """Append an event line to the agent's ``messages.jsonl``."""
        ...

    async def cell_finished(self) -> None:
        """The cell ended: cancel the sub-agents it left running."""
        ...

    async def kernel_restarted(self, reason: str) -> None:
        """The kernel lost its state: log it, tell the observer, reload the inputs."""
        ...
