"""A kernel on a Jupyter kernel gateway: the same :class:`~rlm.agent.host.KernelHandle` as a
local :class:`~rlm.kernels.kernel.Kernel`, driven over REST and one websocket.

``RLM_KERNEL_GATEWAY`` names one or more gateway URLs (Kernel Gateway, Enterprise Gateway,
jupyter_server); every kernel of the run, sub-agents' too, is started there, round-robin over
the URLs. The kernelspec is the gateway's (``RLM_KERNEL_SPEC``, else its default), so a
gateway's Kubernetes or Docker kernelspecs are usable. Its image needs rlm (and the skills).

What differs from a local kernel, and why:

- The gateway passes a client's environment variables only by name (``KERNEL_*`` and a
  configured list), so rlm's own variables (the agent id, depth, output cap, control transport)
  are set by the bootstrap, before ``rlm.inkernel.setup()``; its requests (``rlm.run``...)
  travel over the kernel's own channels, through the websocket. Nothing else of the
  orchestrator's environment reaches the kernel: the remote machine keeps its own ``PATH``
  and ``HOME``, and credentials stay with the orchestrator.
- The working directory is the kernel's (the gateway's), not the orchestrator's.
- Death is seen as the websocket closing or the gateway's ``restarting``/``dead`` status
  (its own restarter brings a crashed kernel back), and, while a cell is silent, by asking
  the gateway every few seconds whether the kernel still exists. A kernel the gateway no
  longer knows (culled, deleted) is replaced by a new one.
- ``RLM_SANDBOX`` does not apply: the gateway's kernelspec decides how kernels are isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from rlm.errors import KernelDiedError, KernelError
from rlm.kernels.base import (
    CONTROL_REQUEST,
    BaseKernel,
    Cell,
    ExecResult,
    KernelGone,
    status_of,
)
from rlm.kernels.gateway_client import GatewayClient, GatewaySocket
from rlm.kernels.memory import MAX_MESSAGE_BYTES
from rlm.kernels.output import OutputCollector

__all__ = ["GatewayKernel", "Gateways", "env_code", "remote_env"]

#: The shell message type of a control reply (see :mod:`rlm.control.kernel_channel`).
CONTROL_REPLY = "rlm_reply"

#: Seconds a silent cell waits before asking the gateway whether its kernel still exists.
LIVENESS_EVERY = 2.0

#: Seconds a cancelled start still waits for the gateway's answer (to delete the kernel).
CANCEL_GRACE = 30.0

#: Environment variables that describe the orchestrator's machine, not the kernel's.
#: (The control socket's address too: a remote kernel reaches the orchestrator over its own
#: channels, see :mod:`rlm.control.kernel_channel`.)
_LOCAL_ONLY = (
    "RLM_SANDBOX",
    "RLM_NETWORK",
    "RLM_KERNEL_GATEWAY",
    "RLM_KERNEL_ENV",
    "RLM_CONTROL_ADDR",
)


def remote_env(env: dict[str, str]) -> dict[str, str]:
    """What of a kernel environment a remote kernel gets: rlm's own variables (the agent's
    id, depth, output cap, control transport), not the orchestrator's machine's."""
    return {
        key: value
        for key, value in env.items()
        if key.startswith("RLM_") and not key.startswith(_LOCAL_ONLY)
    }


def env_code(env: dict[str, str]) -> str:
    """Bootstrap code that sets :func:`remote_env`'s variables in the kernel."""
    return f"__import__('os').environ.update({remote_env(env)!r})\n"


class _Closed:
    """Put on both queues when the websocket ends."""


_CLOSED = _Closed()


class GatewayKernel(BaseKernel):
    """One kernel on a gateway, owned by one agent."""

    #: Tools that touch files run through this kernel (see ``rlm.agent.tools.remote``).
    remote = True
    #: A silent cell asks the gateway whether its kernel still exists this often.
    _poll_every = LIVENESS_EVERY
    _reply_wait = 10.0

    def __init__(
        self,
        client: GatewayClient,
        name: str,
        *,
        env: dict[str, str],
        spec_name: str | None = None,
        bootstrap: str = "",
        bootstrap_expressions: dict[str, str] | None = None,
        interrupt_grace: float = 3.0,
        output_limit: int = -1,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(
            name,
            env=env,
            bootstrap=bootstrap,
            bootstrap_expressions=bootstrap_expressions,
            interrupt_grace=interrupt_grace,
            output_limit=output_limit,
            max_message_bytes=max_message_bytes,
        )
        self.client = client
        self.spec_name = spec_name
        self.kernel_id: str | None = None
        self._socket: GatewaySocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._shell: asyncio.Queue[dict[str, Any] | _Closed] = asyncio.Queue()
        self._iopub: asyncio.Queue[dict[str, Any] | _Closed] = asyncio.Queue()

    @property
    def location(self) -> dict[str, str | None]:
        """Where the kernel runs, for the session log (no credentials)."""
        return {"gateway": self.client.shown, "kernel_id": self.kernel_id}

    @property
    def pid(self) -> int | None:
        """No local process: the kernel runs where the gateway put it."""
        return None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        try:
            await self._create()
            await self._connect(timeout)
        except BaseException:
            await self.shutdown()
            raise

    async def _create(self) -> None:
        """A new kernel on the gateway. Cancelled while the gateway starts it, the start is
        still waited for (bounded), so its id is known and :meth:`shutdown` deletes it:
        otherwise the kernel would live on, unowned, on the gateway."""
        post = asyncio.ensure_future(self.client.start_kernel(self.spec_name, {}))
        try:
            self.kernel_id = await asyncio.shield(post)
        except asyncio.CancelledError:
            await asyncio.wait([post], timeout=CANCEL_GRACE)
            if post.done() and not post.cancelled() and post.exception() is None:
                self.kernel_id = post.result()
            else:
                post.cancel()
            raise

    async def _connect(self, timeout: float) -> None:
        assert self.kernel_id is not None
        self._close_socket()
        self._shell, self._iopub = asyncio.Queue(), asyncio.Queue()
        self._socket = await self.client.connect(self.kernel_id)
        self._reader = asyncio.ensure_future(self._read(self._socket, self._shell, self._iopub))
        await self._wait_ready(timeout)
        await self._create_subshell(timeout)
        await self.run_bootstrap(timeout)

    async def _read(
        self,
        socket: GatewaySocket,
        shell: asyncio.Queue[dict[str, Any] | _Closed],
        iopub: asyncio.Queue[dict[str, Any] | _Closed],
    ) -> None:
        """Sort the websocket's messages into the shell and IOPub queues, until it ends. A
        cell's control request (IOPub ``rlm_request``) goes to :attr:`control` as it
        arrives, whatever is being read: the gateway checked the kernel's signature."""
        try:
            while (msg := await socket.receive()) is not None:
                channel = msg.get("channel")
                if channel == "iopub" and msg["header"].get("msg_type") == CONTROL_REQUEST:
                    if self.control is not None:
                        self.control.on_request(msg)
                elif channel in ("shell", "control"):
                    shell.put_nowait(msg)
                elif channel == "iopub":
                    iopub.put_nowait(msg)
        finally:
            shell.put_nowait(_CLOSED)
            iopub.put_nowait(_CLOSED)

    def _bootstrap_code(self) -> str:
        """rlm's variables, then ``self.bootstrap`` (after every start and restart)."""
        return env_code(self.env) + self.bootstrap

    async def _wait_ready(self, timeout: float) -> None:
        """A ``kernel_info`` reply and its IOPub idle: the kernel answers and IOPub is live."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            msg_id = self._send("kernel_info_request", {})
            reply = await self._await_reply(msg_id, min(deadline, loop.time() + 2.0))
            if reply is None:
                continue
            self.kernel_info = reply.get("content") or {}
            if await self._await_idle(msg_id, 1.0):
                return
        raise KernelError(
            f"gateway kernel {self.kernel_id} did not become ready within {timeout:.0f} s"
        )

    async def _create_subshell(self, timeout: float) -> None:
        """A subshell for control replies (``create_subshell_request`` on the control
        channel, through the websocket); after every start and restart."""
        self.subshell_id = None
        if not self.wants_subshell or self._socket is None:
            return
        msg_id = self._socket.send("control", "create_subshell_request", {})
        reply = await self._await_reply(msg_id, asyncio.get_running_loop().time() + timeout)
        subshell = (reply or {}).get("content", {}).get("subshell_id")
        if not isinstance(subshell, str):
            raise KernelError(f"gateway kernel {self.kernel_id} gave no control subshell")
        self.subshell_id = subshell

    def send_rlm_reply(
        self, parent: dict[str, Any], content: dict[str, Any], buffers: list[bytes]
    ) -> None:
        """Answer a control request on the shell channel, to this kernel's subshell, through
        the websocket (dropped when the kernel is gone or restarted meanwhile)."""
        if self._socket is None or self.subshell_id is None:
            return
        self._socket.send(
            "shell",
            CONTROL_REPLY,
            content,
            parent=parent,
            header={"subshell_id": self.subshell_id},
            buffers=buffers,
        )

    def _send(self, msg_type: str, content: dict[str, Any]) -> str:
        if self._socket is None:
            raise KernelError("kernel is not running")
        return self._socket.send("shell", msg_type, content)

    async def _next(
        self, queue: asyncio.Queue[dict[str, Any] | _Closed], timeout: float
    ) -> dict[str, Any] | _Closed | None:
        """The next message of ``queue``; None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(queue.get(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            return None

    async def _await_reply(self, msg_id: str, deadline: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            msg = await self._next(self._shell, remaining)
            if isinstance(msg, _Closed):
                self._shell.put_nowait(msg)
                raise KernelDiedError("the gateway closed the kernel's websocket")
            if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None

    async def is_alive(self) -> bool:
        if self.kernel_id is None or self._reader is None or self._reader.done():
            return False
        try:
            state = await self.client.kernel_state(self.kernel_id)
        except KernelError:
            return False
        return state not in (None, "dead")

    async def interrupt(self) -> None:
        if self.kernel_id is not None:
            await self.client.interrupt(self.kernel_id)

    async def restart(self, timeout: float = 60.0) -> None:
        """A fresh interpreter; a kernel the gateway no longer has is replaced by a new one."""
        if self.kernel_id is None:
            raise KernelError("kernel is not running")
        self._close_socket()
        if await self.client.kernel_state(self.kernel_id) is None:
            await self._create()
        else:
            try:
                await self.client.restart(self.kernel_id)
            except KernelError:
                # the gateway's own restarter got there first (HTTP 500 while it restarts);
                # the kernel answers again once that restart is done
                if await self.client.kernel_state(self.kernel_id) is None:
                    raise
        await self._connect(timeout)

    def _close_socket(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def shutdown(self) -> None:
        """Close the websocket and delete the kernel on the gateway. Safe to call twice."""
        self._close_socket()
        kernel_id, self.kernel_id = self.kernel_id, None
        if kernel_id is not None:
            with contextlib.suppress(KernelError):
                await self.client.delete(kernel_id)

    # -- execution -------------------------------------------------------------------------

    @property
    def _started(self) -> bool:
        return self.kernel_id is not None

    def _send_execute(
        self, code: str, store_history: bool, user_expressions: dict[str, str]
    ) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": store_history,
            "user_expressions": user_expressions,
            "allow_stdin": False,
            "stop_on_error": False,
        }
        return self._send("execute_request", content)

    async def _next_output(self, timeout: float) -> dict[str, Any] | None:
        """The websocket closing, or the gateway saying its kernel is ``restarting`` or
        ``dead`` (a status without a parent), is the kernel gone."""
        msg = await self._next(self._iopub, timeout)
        if isinstance(msg, _Closed):
            self._iopub.put_nowait(msg)
            raise KernelGone
        if msg is not None and status_of(msg) in ("restarting", "dead"):
            raise KernelGone(restarting=status_of(msg) == "restarting")
        return msg

    async def _on_silence(self, cell: Cell, waited: float) -> None:
        """After a whole liveness period of silence: does the gateway still have the kernel?"""
        if waited >= LIVENESS_EVERY and not await self.is_alive():
            raise KernelGone

    async def _after_cell(self, cell: Cell) -> None:
        """Nothing to repair: the websocket drops no message."""

    async def _on_death(
        self, collector: OutputCollector, *, restarting: bool = False
    ) -> ExecResult:
        """The kernel died: the gateway's restarter may already be bringing it back
        (``restarting``); otherwise restart it, or start a new one if the gateway lost it."""
        self._running = None
        if restarting:
            self._close_socket()
            await self._connect(60.0)  # waits until the restarted kernel answers
        else:
            await self.restart()
        note = "the kernel died; it was restarted and all variables and imports are lost"
        return ExecResult(collector.text(), "died", [note], outputs=collector.outputs())


class Gateways:
    """The gateways of one run: kernels are spread over them round-robin."""

    def __init__(
        self,
        urls: tuple[str, ...],
        token: str | None,
        *,
        spec_name: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if not urls:
            raise ValueError("no gateway URL")
        self.clients = [
            GatewayClient(url, token, max_message_bytes=max_message_bytes) for url in urls
        ]
        self.spec_name = spec_name
        self.max_message_bytes = max_message_bytes
        self._next = itertools.count()

    async def check(self) -> None:
        """Every gateway answers, takes the token and has the kernelspec (a bad token is
        one line before the run starts, not an agent error after its first turn)."""
        await asyncio.gather(*(client.check(self.spec_name) for client in self.clients))

    def close(self) -> None:
        """Close the HTTP clients (after every kernel is shut down)."""
        for client in self.clients:
            client.close()

    def new_kernel(self, name: str, **kw: Any) -> GatewayKernel:
        """A kernel object (not started) on the next gateway in turn."""
        client = self.clients[next(self._next) % len(self.clients)]
        return GatewayKernel(
            client,
            name,
            spec_name=self.spec_name,
            **{"max_message_bytes": self.max_message_bytes, **kw},
        )
