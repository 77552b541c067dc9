"""What a local :class:`~rlm.kernels.kernel.Kernel` and a
:class:`~rlm.kernels.gateway.GatewayKernel` share: the result of a cell, and the execute loop
of a :class:`~rlm.agent.host.KernelHandle` (timeout -> interrupt -> restart, death -> restart,
settle after a cancelled cell), written once over a few transport primitives.

The two differ in how messages travel (ZeroMQ sockets locally, one websocket to a gateway)
and in how a dead kernel shows (a local process exits; a gateway closes the websocket or
says ``restarting``/``dead``). Those are the abstract methods below; what a cell does with
its messages, and what the model is told when it times out or its kernel dies, is here, so
both kernels tell the model the same. Nothing here imports ZeroMQ or jupyter_client.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlm.errors import KernelError
from rlm.kernels.output import OutputCollector

__all__ = ["CONTROL_REQUEST", "BaseKernel", "Cell", "ControlSink", "ExecResult", "KernelGone"]

#: The IOPub message type of a control request from a cell.
CONTROL_REQUEST = "rlm_request"


class ControlSink(Protocol):
    """Where a kernel's control requests go (:class:`rlm.control.kernel_channel.KernelControl`)."""

    def on_request(self, msg: dict[str, Any]) -> None: ...

    def on_invalid(self, why: str) -> None: ...


@dataclass
class ExecResult:
    """What one execution produced, as the model should read it."""

    output: str
    status: str = "ok"
    """``ok``, ``error`` (exception in the cell), ``timeout``, ``restarted`` or ``died``."""
    notes: list[str] = field(default_factory=list)
    user_expressions: dict[str, Any] = field(default_factory=dict)
    """The execute reply's evaluated ``user_expressions`` (``{name: {status, data, ...}}``)."""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    """The cell's IOPub outputs (``msg_type`` and ``content``), capped, for the log."""

    @property
    def text(self) -> str:
        parts = [self.output.rstrip("\n")] if self.output.strip() else []
        parts += [f"[{note}]" for note in self.notes]
        return "\n".join(parts) if parts else "[no output]"


class KernelGone(Exception):
    """Raised by a transport primitive: the kernel died, or its connection closed, while a
    cell was being read. Caught by :class:`BaseKernel`, never seen by a caller."""

    def __init__(self, *, restarting: bool = False) -> None:
        super().__init__("kernel gone")
        #: The gateway's own restarter is already bringing the kernel back.
        self.restarting = restarting


@dataclass
class Cell:
    """One execution being read: what the transport's silence handling may need or settle."""

    msg_id: str
    deadline: float
    #: IOPub messages lost for being over the size limit (counted by a local kernel).
    dropped: int = 0
    #: The execute reply, when found before the cell's idle status (which may have been lost).
    reply: dict[str, Any] | None = None


def status_of(msg: dict[str, Any]) -> str | None:
    """The ``execution_state`` of a ``status`` message (None for any other message)."""
    if msg["header"].get("msg_type") != "status":
        return None
    state = msg["content"].get("execution_state")
    return state if isinstance(state, str) else None


def _dropped_note(count: int, limit: int) -> str:
    what = "a message" if count == 1 else f"{count} messages"
    return f"output dropped: {what} over {limit:,} bytes"


class BaseKernel(abc.ABC):
    """A kernel owned by one agent: the execute loop over a transport's primitives."""

    #: Seconds one wait for an IOPub message lasts before the transport hears of the silence.
    _poll_every: float = 0.5
    #: Seconds to wait for a cell's execute reply once its idle status has arrived.
    _reply_wait: float = 5.0

    def __init__(
        self,
        name: str,
        *,
        env: dict[str, str],
        bootstrap: str = "",
        bootstrap_expressions: dict[str, str] | None = None,
        interrupt_grace: float = 3.0,
        output_limit: int = -1,
        max_message_bytes: int,
    ) -> None:
        self.name = name
        self.env = env
        self.bootstrap = bootstrap
        #: Expressions evaluated after the bootstrap; results land in ``bootstrap_values``.
        #: They travel in the execute reply, so the output cap never cuts them.
        self.bootstrap_expressions = dict(bootstrap_expressions or {})
        self.interrupt_grace = interrupt_grace
        self.output_limit = output_limit
        self.max_message_bytes = max_message_bytes
        self.bootstrap_output = ""
        self.bootstrap_values: dict[str, Any] = {}
        #: The ``kernel_info_reply`` content of the running kernel (its features: subshells).
        self.kernel_info: dict[str, Any] = {}
        #: The subshell control replies go to (None: this kernel uses the ipc socket).
        self.subshell_id: str | None = None
        #: Receives this kernel's IOPub control requests (None: they are dropped).
        self.control: ControlSink | None = None
        self._lock = asyncio.Lock()
        self._running: str | None = None

    # -- the transport's primitives --------------------------------------------------------

    @property
    @abc.abstractmethod
    def _started(self) -> bool:
        """Whether there is a kernel to run code in (started and not shut down)."""

    @abc.abstractmethod
    def _send_execute(
        self, code: str, store_history: bool, user_expressions: dict[str, str]
    ) -> str:
        """Send an execute request; its msg_id."""

    @abc.abstractmethod
    async def _next_output(self, timeout: float) -> dict[str, Any] | None:
        """The next IOPub message (control requests already passed on), None after
        ``timeout`` seconds of silence; raises :class:`KernelGone` when the transport knows
        the kernel is gone without asking."""

    @abc.abstractmethod
    async def _on_silence(self, cell: Cell, waited: float) -> None:
        """No message came for ``waited`` seconds while ``cell`` ran: raise
        :class:`KernelGone` if the kernel is dead, or set ``cell.reply`` if it has finished."""

    @abc.abstractmethod
    async def _after_cell(self, cell: Cell) -> None:
        """The cell has finished and its reply was read (or not): repair what it broke."""

    @abc.abstractmethod
    async def _await_reply(self, msg_id: str, deadline: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id`` (None: none before ``deadline``)."""

    @abc.abstractmethod
    def _bootstrap_code(self) -> str:
        """The code of :meth:`run_bootstrap` ("": nothing to run)."""

    @abc.abstractmethod
    async def _on_death(
        self, collector: OutputCollector, *, restarting: bool = False
    ) -> ExecResult:
        """The kernel died while a cell ran: bring it back and say so."""

    @abc.abstractmethod
    async def is_alive(self) -> bool: ...

    @abc.abstractmethod
    async def interrupt(self) -> None: ...

    @abc.abstractmethod
    async def restart(self, timeout: float = 60.0) -> None:
        """A fresh interpreter; every variable is lost."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the kernel and everything it started; safe to call twice."""

    # -- shared ----------------------------------------------------------------------------

    @property
    def running_cell(self) -> str | None:
        """The msg_id of the execute request running now, None when the kernel is idle."""
        return self._running

    @property
    def wants_subshell(self) -> bool:
        """Whether control goes over this kernel's channels: its ipykernel has subshells
        and ``RLM_CONTROL_TRANSPORT`` is not ``ipc`` (the kernel side decides the same)."""
        features = self.kernel_info.get("supported_features") or []
        return self.env.get("RLM_CONTROL_TRANSPORT", "auto") != "ipc" and (
            "kernel subshells" in features
        )

    async def run_bootstrap(self, timeout: float = 60.0) -> None:
        """Run the bootstrap (after every start and restart: a restarted kernel has lost it,
        and when a pooled kernel is handed to its agent). ``bootstrap_expressions`` are
        evaluated after it, into ``bootstrap_values``."""
        code = self._bootstrap_code()
        if not code:
            return
        result = await self._run(
            code, timeout, store_history=False, user_expressions=self.bootstrap_expressions
        )
        if result.status != "ok":
            raise KernelError(f"kernel bootstrap failed: {result.output[-2000:]}")
        self.bootstrap_output = result.output
        self.bootstrap_values = result.user_expressions

    async def execute(self, code: str, timeout: float) -> ExecResult:
        """Run ``code``; on timeout interrupt (then restart), on death restart and say so."""
        async with self._lock:
            if not self._started:
                raise KernelError("kernel is not running")
            return await self._run(code, timeout)

    async def run_hidden(
        self, code: str, expressions: dict[str, str], timeout: float
    ) -> ExecResult:
        """Run ``code`` out of the history and return ``expressions`` evaluated after it
        (for tools that run through the kernel: their result travels in the reply, which
        the output cap never cuts)."""
        async with self._lock:
            if not self._started:
                raise KernelError("kernel is not running")
            return await self._run(code, timeout, store_history=False, user_expressions=expressions)

    async def _run(
        self,
        code: str,
        timeout: float,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
    ) -> ExecResult:
        loop = asyncio.get_running_loop()
        collector = OutputCollector(self.output_limit)
        msg_id = self._send_execute(code, store_history, user_expressions or {})
        self._running = msg_id
        cell = Cell(msg_id, loop.time() + timeout)
        status = "ok"
        while True:
            remaining = cell.deadline - loop.time()
            if remaining <= 0:
                return await self._on_timeout(msg_id, collector, timeout)
            waited = min(self._poll_every, remaining)
            try:
                msg = await self._next_output(waited)
                if msg is None:
                    await self._on_silence(cell, waited)
            except KernelGone as gone:
                return await self._on_death(collector, restarting=gone.restarting)
            if msg is None:
                if cell.reply is not None:
                    break
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"].get("msg_type")
            if kind == "status" and status_of(msg) == "idle":
                break
            if kind == "error":
                status = "error"
            collector.handle(msg)
        reply = cell.reply
        if reply is None:
            reply = await self._await_reply(msg_id, loop.time() + self._reply_wait)
        self._running = None
        await self._after_cell(cell)
        if reply is not None and reply.get("content", {}).get("status") == "error":
            status = "error"
        notes = [_dropped_note(cell.dropped, self.max_message_bytes)] if cell.dropped else []
        evaluated = (reply or {}).get("content", {}).get("user_expressions") or {}
        return ExecResult(
            collector.text(), status, notes, user_expressions=evaluated, outputs=collector.outputs()
        )

    async def _await_idle(self, msg_id: str, timeout: float) -> bool:
        """Whether ``msg_id``'s idle status arrives within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                msg = await self._next_output(remaining)
            except KernelGone:
                return False
            if msg is None:
                return False
            if msg["parent_header"].get("msg_id") == msg_id and status_of(msg) == "idle":
                return True
        return False

    async def settle(self) -> None:
        """After a cancelled ``execute``: stop the cell that is still running (interrupt, or
        restart if it ignores the interrupt) so the kernel is ready for the next call."""
        async with self._lock:
            msg_id, self._running = self._running, None
            if msg_id is None or not self._started:
                return
            try:
                await self.interrupt()
                if await self._await_idle(msg_id, self.interrupt_grace):
                    await self._await_reply(msg_id, asyncio.get_running_loop().time() + 5.0)
                    return
            except KernelError:
                pass
            await self.restart()

    async def _on_timeout(
        self, msg_id: str, collector: OutputCollector, timeout: float
    ) -> ExecResult:
        # ``_running`` stays set until the cell is known to have stopped: a turn cancelled
        # during the interrupt grace leaves ``settle`` a cell to stop, not a busy kernel.
        await self.interrupt()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interrupt_grace
        while (remaining := deadline - loop.time()) > 0:
            try:
                msg = await self._next_output(min(self._poll_every, remaining))
            except KernelGone:
                break
            if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                continue
            if status_of(msg) == "idle":
                with contextlib.suppress(KernelError):
                    await self._await_reply(msg_id, loop.time() + 5.0)
                self._running = None
                note = f"timed out after {timeout:g} s: execution interrupted, kernel state kept"
                return ExecResult(collector.text(), "timeout", [note], outputs=collector.outputs())
            if msg["header"].get("msg_type") != "error":  # the KeyboardInterrupt trace is noise
                collector.handle(msg)
        await self.restart()
        self._running = None
        note = (
            f"timed out after {timeout:g} s and did not stop when interrupted: the kernel was "
            "restarted, all variables and imports are lost"
        )
        return ExecResult(collector.text(), "restarted", [note], outputs=collector.outputs())
