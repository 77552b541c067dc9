"""One agent's Jupyter kernel: start, execute with a timeout, recover, shut down.

The kernel is a real ipykernel in rlm's own Python (``sys.executable``), driven over ZeroMQ
by ``jupyter_client``'s async manager. Transport is ``ipc`` with a unique socket path per
kernel inside the orchestrator's private run directory: tcp ports race when many kernels
start at once, and jupyter_client's default ipc path (``kernel-ipc`` in the cwd) is shared by
every kernel, which makes them cross-talk.

Readiness is a ``kernel_info`` reply plus the matching IOPub ``idle`` (so the IOPub
subscription is known to be live) instead of ``wait_for_ready``'s fixed 0.2 s polls.

Control requests from cells travel on this kernel's own channels where ipykernel has
subshells (:mod:`rlm.control.kernel_channel`): after readiness the kernel gets a subshell
(``create_subshell_request`` on the control channel), every IOPub ``rlm_request`` read here
goes to :attr:`Kernel.control`, whatever execution is being read, and
:meth:`Kernel.send_rlm_reply` answers on the shell channel, to that subshell.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
from pathlib import Path
from queue import Empty
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from rlm.errors import KernelDiedError, KernelError
from rlm.kernels.base import CONTROL_REQUEST, BaseKernel, Cell, ControlSink, ExecResult, KernelGone
from rlm.kernels.memory import MAX_MESSAGE_BYTES, DropCounter, raise_oom_score
from rlm.kernels.output import MEMORY_CEILING, OutputCollector
from rlm.sandbox.escapees import KERNEL_CODE, kill_descendants
from rlm.sandbox.limits import death_cause
from rlm.sandbox.policy import kernel_prefix
from rlm.truncation import truncate
from rlm.zygote.prepared import KERNEL_FLAGS

__all__ = ["MEMORY_CEILING", "ControlSink", "ExecResult", "Kernel", "OutputCollector", "truncate"]

#: How long to poll between liveness checks while waiting for kernel messages.
_POLL = 0.5
#: Seconds without a heartbeat reply after which a provisioner's kernel counts as dead.
_HEARTBEAT = 3.0
#: Seconds a provisioner's kernel has to exit after a shutdown request before it is killed.
_STOP_GRACE = 5.0


@functools.cache
def _zmq_context(max_message_bytes: int = MAX_MESSAGE_BYTES) -> zmq.asyncio.Context:
    """One ZeroMQ context (one I/O thread) for every kernel client of this process, instead of
    jupyter_client's context per kernel manager; never terminated. pyzmq's default 100 ms
    reconnect interval is pure latency on a local socket. One per message size limit: the
    limit is a socket option that must be set before a socket connects."""
    context = zmq.asyncio.Context()
    # libzmq's default of 1,023 sockets per context is ~200 kernels (five sockets each);
    # the open-files limit (raised at start) is the real bound.
    context.set(zmq.MAX_SOCKETS, context.get(zmq.SOCKET_LIMIT))
    context.setsockopt(zmq.RECONNECT_IVL, 5)
    context.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # for every socket created later
    return context


class Kernel(BaseKernel):
    """A real ipykernel owned by one agent."""

    _poll_every = _POLL

    def __init__(
        self,
        run_dir: Path,
        name: str,
        *,
        cwd: Path,
        env: dict[str, str],
        bootstrap: str = "",
        bootstrap_expressions: dict[str, str] | None = None,
        interrupt_grace: float = 3.0,
        output_limit: int = -1,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        spec_name: str = "rlm",
        provisioner: dict[str, Any] | None = None,
        installed_spec: bool = False,
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
        self.run_dir = run_dir
        #: ``spec_name`` is an installed kernelspec (``RLM_KERNEL_SPEC``, e.g. a gateway
        #: provisioner's) rather than rlm's own: see :meth:`_installed_manager`.
        self.installed_spec = installed_spec
        self.cwd = cwd
        #: Kernelspec written to the run dir; its ``kernel_provisioner`` stanza (None: local).
        self.spec_name = spec_name
        self.provisioner = provisioner
        self._km: AsyncKernelManager | None = None
        self._client: Any = None
        self._drops: DropCounter | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        spec_name = self.spec_name
        spec_dir = self.run_dir / "kernels" / spec_name
        if not self.installed_spec and not (spec_dir / "kernel.json").exists():
            spec_dir.parent.mkdir(mode=0o700, exist_ok=True)
            spec_dir.mkdir(mode=0o700, exist_ok=True)
            # RLM_SANDBOX: the kernel confines itself before it starts a thread (strict: in
            # bubblewrap, where a SIGINT would kill the sandbox: interrupts are messages).
            argv = [
                *kernel_prefix(self.env), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                *KERNEL_FLAGS,  # the flags the zygote parsed once for every forked kernel
            ]  # fmt: skip
            spec: dict[str, Any] = {"argv": argv, "display_name": "rlm", "language": "python"}
            if self.env.get("RLM_SANDBOX") == "strict":
                spec["interrupt_mode"] = "message"
            if self.provisioner is not None:
                spec["metadata"] = {"kernel_provisioner": self.provisioner}
            fd = os.open(spec_dir / "kernel.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(spec))
        ksm = KernelSpecManager(kernel_dirs=[str(self.run_dir / "kernels")])
        ksm.ensure_native_kernel = False
        self._km = self._installed_manager() if self.installed_spec else AsyncKernelManager(
            context=_zmq_context(self.max_message_bytes),
            kernel_name=spec_name,
            kernel_spec_manager=ksm,
            transport="ipc",
            ip=str(self.run_dir / self.name),
            connection_file=str(self.run_dir / f"{self.name}.json"),
        )
        try:
            # The kernel's own stdio is not the user's terminal: stdout carries the answer
            # alone, and what cells print reaches the model over IOPub anyway.
            # (An installed spec's provisioner sets its own.)
            quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
            await self._km.start_kernel(
                env=self.env,
                cwd=str(self.cwd),
                **({} if self.installed_spec else {**quiet, "stderr": subprocess.DEVNULL}),
            )
            await self._connect(timeout)
        except BaseException:
            await self.shutdown()
            raise

    def _installed_manager(self) -> AsyncKernelManager:
        """A manager of the installed kernelspec ``spec_name``, whose provisioner may start
        the kernel on another host: its traffic leaves this machine, so it is Curve-encrypted
        (jupyter_client >= 8.9); a spec or provisioner that cannot encrypt fails to start."""
        return AsyncKernelManager(
            context=_zmq_context(self.max_message_bytes),
            kernel_name=self.spec_name,
            transport_encryption="required",
            connection_file=str(self.run_dir / f"{self.name}.json"),
        )

    async def _connect(self, timeout: float) -> None:
        assert self._km is not None
        raise_oom_score(self.pid)  # after every start and restart: a new process each time
        self._stop_channels()
        client = self._km.client(context=_zmq_context(self.max_message_bytes))
        # Only shell and IOPub are used: liveness comes from the provisioner, interrupts are
        # signals, input is refused. No heartbeat thread, stdin or control socket per kernel.
        # A provisioner's kernel may run on another host, where no local process tells that
        # it died: the heartbeat does (see ``is_alive``).
        beat = self.installed_spec
        client.start_channels(shell=True, iopub=True, stdin=False, hb=beat, control=False)
        if beat:
            client.hb_channel.time_to_dead = _HEARTBEAT
        self._client = client
        self._drops = DropCounter(client.iopub_channel.socket)
        await self._wait_ready(timeout)
        self._restrict_sockets()
        await self._create_subshell(timeout)
        # The kernel has read its connection file (ports and signing key); any same-uid
        # process (another agent's cell) could read it too and drive this kernel. It is gone
        # once the kernel answers; jupyter_client writes it again, same ports and key, for a
        # restart, and it is removed again here.
        with contextlib.suppress(OSError):
            os.remove(self._km.connection_file)
        await self.run_bootstrap(timeout)

    def _bootstrap_code(self) -> str:
        """``self.bootstrap``, after the code by which the kernel reaps its cells' orphans."""
        return KERNEL_CODE + self.bootstrap if self.bootstrap else ""

    async def _wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            msg_id = self._client.kernel_info()
            reply = await self._await_reply(msg_id, deadline)
            if reply and await self._await_idle(msg_id, 0.5):
                self.kernel_info = reply.get("content") or {}
                return
        raise KernelError(f"kernel did not become ready within {timeout:.0f} s")

    async def _await_reply(self, msg_id: str, deadline: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id`` (None: none before ``deadline``)."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                msg: dict[str, Any] = await self._client.shell_channel.get_msg(
                    timeout=min(_POLL, remaining)
                )
            except Empty:
                if not await self.is_alive():
                    raise KernelDiedError("kernel exited during start-up") from None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None

    async def _create_subshell(self, timeout: float) -> None:
        """A subshell for control replies, on the control channel (opened for this only)."""
        self.subshell_id = None
        if not self.wants_subshell:
            return
        channel = self._client.control_channel
        channel.start()
        try:
            request = self._client.session.msg("create_subshell_request", {})
            channel.send(request)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (remaining := deadline - loop.time()) > 0:
                try:
                    reply = await channel.get_msg(timeout=min(_POLL, remaining))
                except Empty:
                    if not await self.is_alive():
                        raise KernelDiedError("kernel exited during start-up") from None
                    continue
                if reply["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                    continue
                subshell = reply["content"].get("subshell_id")
                if not isinstance(subshell, str):
                    raise KernelError(f"kernel refused a control subshell: {reply['content']}")
                self.subshell_id = subshell
                return
            raise KernelError(f"kernel did not create a control subshell within {timeout:.0f} s")
        finally:
            channel.stop()
            self._client._control_channel = None  # a new one on the next access

    def send_rlm_reply(
        self, parent: dict[str, Any], content: dict[str, Any], buffers: list[bytes]
    ) -> None:
        """Answer a control request on the shell channel, to this kernel's subshell (dropped
        when the kernel is gone or restarted meanwhile: nobody waits for it any more)."""
        client = self._client
        if client is None or self.subshell_id is None:
            return
        msg = client.session.msg("rlm_reply", content=content, parent=parent)
        msg["header"]["subshell_id"] = self.subshell_id
        client.session.send(client.shell_channel.socket, msg, buffers=buffers)

    async def _next_iopub(self, timeout: float) -> dict[str, Any]:
        """The next IOPub message that is not a control request (raises ``Empty`` after
        ``timeout``). Control requests go to :attr:`control` as they are read, whichever
        execution this read is for; a message that fails its signature check (forged,
        tampered, replayed) is counted there and skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = max(deadline - loop.time(), 0.0)
            try:
                msg: dict[str, Any] = await self._client.iopub_channel.get_msg(timeout=remaining)
            except Empty:
                raise
            except (ValueError, TypeError, KeyError) as exc:  # bad signature, replay, garbage
                if self.control is not None:
                    self.control.on_invalid(f"IOPub: {exc}")
                if loop.time() >= deadline:
                    raise Empty from None
                continue
            if msg["header"].get("msg_type") != CONTROL_REQUEST:
                return msg
            if self.control is not None:
                self.control.on_request(msg)
            if loop.time() >= deadline:
                raise Empty

    async def _next_output(self, timeout: float) -> dict[str, Any] | None:
        try:
            return await self._next_iopub(timeout)
        except Empty:
            return None

    def _restrict_sockets(self) -> None:
        """The kernel binds its ipc sockets with the user's umask; make them owner-only."""
        assert self._km is not None
        info = self._km.get_connection_info()
        if info.get("transport") != "ipc":  # tcp: ports, not files (an installed spec)
            return
        for key in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
            path = f"{info['ip']}-{info[key]}"
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)

    @property
    def remote(self) -> bool:
        """True when a provisioner may run the kernel elsewhere: the file tools go through it."""
        return self.installed_spec

    @property
    def location(self) -> dict[str, Any] | None:
        """Where an installed kernelspec's kernel runs, for the session log (None: here)."""
        if not self.installed_spec or self._km is None:
            return None
        return {"kernel_spec": self.spec_name, "ip": self._km.get_connection_info().get("ip")}

    async def is_alive(self) -> bool:
        beating = self._client.hb_channel._beating if self.installed_spec and self._client else None
        if beating is False:  # a provisioner's kernel missed a heartbeat (None: none yet)
            return False
        return self._km is not None and await self._km.is_alive()

    @property
    def pid(self) -> int | None:
        """The kernel process id, for tests and diagnostics."""
        provisioner = self._km.provisioner if self._km else None
        process = getattr(provisioner, "process", None)
        return process.pid if process else None

    async def interrupt(self) -> None:
        if self._km is not None:
            await self._km.interrupt_kernel()

    async def restart(self, timeout: float = 60.0) -> None:
        """A fresh interpreter on the same connection; every variable is lost."""
        if self._km is None:
            raise KernelError("kernel is not running")
        if self.installed_spec:
            await self._stop_installed(self._km)
            await self._km.start_kernel(env=self.env, cwd=str(self.cwd))
        else:
            await asyncio.to_thread(kill_descendants, self.pid)  # also what left its group
            await self._km.restart_kernel(now=True)
        await self._connect(timeout)

    def _stop_channels(self) -> None:
        if self._drops is not None:
            self._drops.close()
            self._drops = None
        if self._client is not None:
            self._client.stop_channels()
            self._client = None

    async def shutdown(self) -> None:
        """Stop the kernel and its whole process group. Safe to call twice."""
        self._stop_channels()
        km, self._km = self._km, None
        if km is not None and km.has_kernel and self.installed_spec:
            await self._stop_installed(km)
        elif km is not None and km.has_kernel:
            # What the cells started, even outside the kernel's process group (a setsid or
            # double-forked process: the kernel is their subreaper). rlm.sandbox.escapees
            pid = getattr(km.provisioner, "process", None)
            await asyncio.to_thread(kill_descendants, getattr(pid, "pid", None))
            try:
                await km.shutdown_kernel(now=True)
            except Exception:  # the process may already be gone
                await km.cleanup_resources()

    @staticmethod
    async def _stop_installed(km: AsyncKernelManager) -> None:
        """Stop a provisioner's kernel. Started on this host, its process group (the kernel
        and its launcher's listener) is killed. On another host it is asked to exit (a
        shutdown request on its control channel), and killed through the provisioner only
        if it has not exited after ``_STOP_GRACE`` seconds: gateway_provisioners sends
        signals through that listener, which can time out and leave the kernel running."""
        local = getattr(km.provisioner, "local_proc", None)
        try:
            if local is not None:
                _kill_group(local.pid)
                await asyncio.to_thread(local.wait, _STOP_GRACE)
            else:
                loop = asyncio.get_running_loop()
                await km.request_shutdown()
                deadline = loop.time() + _STOP_GRACE
                while await km.is_alive() and loop.time() < deadline:
                    await asyncio.sleep(0.1)  # polling the provisioner: it has no exit event
                if await km.is_alive():
                    await km.shutdown_kernel(now=True)
        except Exception:  # the kernel or its host may already be gone
            pass
        await km.cleanup_resources()

    # -- execution -------------------------------------------------------------------------

    @property
    def _started(self) -> bool:
        return self._km is not None

    def _send_execute(
        self, code: str, store_history: bool, user_expressions: dict[str, str]
    ) -> str:
        msg_id: str = self._client.execute(
            code,
            store_history=store_history,
            allow_stdin=False,
            stop_on_error=False,
            user_expressions=user_expressions,
        )
        self._take_drops()  # earlier drops belong to no cell
        return msg_id

    async def _on_silence(self, cell: Cell, waited: float) -> None:
        """A dead kernel is gone; a dropped (oversized) message cost the IOPub connection,
        which is replaced, and maybe the cell's idle status: then its reply says it is done."""
        if not await self.is_alive():
            raise KernelGone
        if new_drops := self._take_drops():
            cell.dropped += new_drops
            self._reconnect_iopub()
        if cell.dropped:  # the idle status may have gone with the dropped connection
            loop = asyncio.get_running_loop()
            reply = await self._await_reply(cell.msg_id, loop.time() + 0.01)
            if reply is not None:
                # until IOPub is known to be live again, the next cell could lose
                # its output: the same handshake as at start-up
                await self._wait_ready(timeout=max(cell.deadline - loop.time(), 5.0))
                cell.reply = reply

    async def _after_cell(self, cell: Cell) -> None:
        """A message dropped at the end of the cell cost the IOPub connection: a new one,
        known to be live before the next cell (the same handshake as at start-up)."""
        if new_drops := self._take_drops():
            cell.dropped += new_drops
            self._reconnect_iopub()
            await self._wait_ready(timeout=5.0)

    def _take_drops(self) -> int:
        return self._drops.take() if self._drops is not None else 0

    def _reconnect_iopub(self) -> None:
        """After a dropped message libzmq closes the IOPub connection for good (a protocol
        error is not retried): a new IOPub channel (socket and subscription) replaces it."""
        if self._drops is not None:
            self._drops.close()
        self._client.iopub_channel.stop()
        self._client._iopub_channel = None  # jupyter_client creates a new one on access
        self._client.iopub_channel.start()
        self._drops = DropCounter(self._client.iopub_channel.socket)

    async def _on_death(
        self, collector: OutputCollector, *, restarting: bool = False
    ) -> ExecResult:
        self._running = None
        code = cause = None
        if self._km is not None and self._km.provisioner is not None:
            code = await self._km.provisioner.poll()
            pid = getattr(self._km.provisioner, "pid", None)
            cause = await asyncio.to_thread(death_cause, pid, self.env)  # RLM_KERNEL_MEMORY
        await self.restart()
        how = f" (exit code {code})" if code is not None else ""
        how += f": {cause}" if cause else ""
        note = f"the kernel died{how}; it was restarted and all variables and imports are lost"
        return ExecResult(collector.text(), "died", [note], outputs=collector.outputs())


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid``'s process group if it leads one, else ``pid`` alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
