"""The orchestrator's handle on its zygote: start it, ask it for kernels, stop it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

from rlm.kernels.prestart import ZYGOTE_CODE as _ZYGOTE_CODE
from rlm.kernels.prestart import PrestartedZygote
from rlm.logs.procs import pid_alive
from rlm.zygote import fork_supported

__all__ = ["ForkError", "ForkedProcess", "Zygote"]

log = logging.getLogger("rlm.zygote")

#: Zygotes of this process by socket path, for the provisioner (it only knows the path).
_REGISTRY: weakref.WeakValueDictionary[str, Zygote] = weakref.WeakValueDictionary()


class ForkError(Exception):
    """Forking a kernel failed; the caller starts it cold instead."""


class ForkedProcess:
    """A ``Popen``-like view of a kernel forked by the zygote (it is not our child).

    The exit status arrives on the request connection when the zygote reaps the kernel. If
    the zygote itself is gone, liveness falls back to ``/proc``.
    """

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        self._writer = writer
        self._exited = asyncio.get_running_loop().create_future()
        self._watch = asyncio.ensure_future(self._watch_exit(reader))

    async def _watch_exit(self, reader: asyncio.StreamReader) -> None:
        code: int | None = None
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if "exit" in message:
                    code = int(message["exit"])
                    break
        except (OSError, ValueError):
            pass
        finally:
            if code is None and not pid_alive(self.pid):
                code = -signal.SIGKILL  # the zygote is gone and so is the kernel
            if code is not None:
                self.returncode = code
            if not self._exited.done():
                self._exited.set_result(code)

    def poll(self) -> int | None:
        if self.returncode is None and self._exited.done() and not pid_alive(self.pid):
            self.returncode = -signal.SIGKILL
        return self.returncode

    async def wait_async(self) -> int:
        await asyncio.shield(self._exited)
        while self.poll() is None:  # zygote gone while the kernel lived: watch /proc
            await asyncio.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        return self.poll()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Drop the request connection (the zygote kills the kernel if it still runs)."""
        self._watch.cancel()
        self._writer.close()


async def _await_start(reader: asyncio.StreamReader) -> int:
    """The kernel's pid once it reported ``started`` (the two lines come in either order)."""
    pid, started = None, False
    while pid is None or not started:
        line = await reader.readline()
        if not line:
            raise ForkError("zygote closed the connection (did it die?)")
        message = json.loads(line)
        if "error" in message:
            raise ForkError(f"forked kernel failed: {message['error']}")
        if "exit" in message:
            raise ForkError(f"forked kernel exited with code {message['exit']} while starting")
        if "pid" in message:
            pid = int(message["pid"])
        started = started or bool(message.get("started"))
    return pid


class Zygote:
    """One pre-imported zygote per orchestrator, in its private run directory."""

    def __init__(
        self,
        run_dir: Path,
        *,
        env: dict[str, str],
        preload: list[str] | tuple[str, ...] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.run_dir = run_dir
        self.path = str(run_dir / "zygote.sock")
        self.env = env
        self.preload = list(preload)
        self.start_timeout = start_timeout
        self.info: dict[str, Any] = {}
        self.disabled: str | None = None
        self._proc: asyncio.subprocess.Process | subprocess.Popen[bytes] | None = None
        self._ready: asyncio.Future[None] | None = None
        #: The folder of a zygote adopted from the CLI's prestart (removed at close).
        self._folder: str | None = None
        _REGISTRY[self.path] = self

    def adopt(self, pre: PrestartedZygote) -> None:
        """Use the zygote the CLI started at process start (:mod:`rlm.kernels.prestart`)
        instead of starting one; its readiness is read by the prestart's thread."""
        _REGISTRY.pop(self.path, None)
        self.path = pre.path
        _REGISTRY[self.path] = self
        self._proc = pre.process
        self._folder = pre.folder
        self._ready = asyncio.ensure_future(self._await_adopted(pre))

    async def _await_adopted(self, pre: PrestartedZygote) -> None:
        try:
            self.info = await asyncio.to_thread(pre.wait_ready, self.start_timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise ForkError(f"zygote failed to start: {exc}") from None

    @staticmethod
    def lookup(path: str) -> Zygote | None:
        return _REGISTRY.get(path)

    async def start(self) -> None:
        """Spawn the zygote; returns at once (readiness is awaited by the first fork)."""
        if not fork_supported():
            self.disable(f"forking needs Linux (this is {sys.platform})")
            return
        # Where to listen and whom to outlive go in the environment, not the command line:
        # forked kernels inherit the zygote's command line.
        env = {**self.env, "RLM_ZYGOTE_SOCKET": self.path, "RLM_ZYGOTE_PARENT": str(os.getpid())}
        fd = os.open(self.run_dir / "zygote.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as logfile:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _ZYGOTE_CODE, *self.preload,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=logfile,
                env=env,
                cwd=self.run_dir,
                start_new_session=True,  # a terminal Ctrl-C is for the orchestrator alone
            )  # fmt: skip
        self._ready = asyncio.ensure_future(self._await_ready())

    async def _await_ready(self) -> None:
        proc = self._proc
        assert isinstance(proc, asyncio.subprocess.Process) and proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.start_timeout)
        except asyncio.TimeoutError:
            raise ForkError(f"zygote not ready within {self.start_timeout:g} s") from None
        try:
            message = json.loads(line) if line else {}
        except ValueError:
            message = {}
        if message.get("ready"):
            self.info = message
            return
        reason = message.get("error") or f"zygote exited (see {self.run_dir / 'zygote.log'})"
        raise ForkError(f"zygote failed to start: {reason}")

    async def ready(self) -> None:
        """Wait until the zygote can fork; raises ``ForkError`` if it cannot."""
        if self.disabled:
            raise ForkError(self.disabled)
        if self._ready is None:
            raise ForkError("zygote not started")
        await asyncio.shield(self._ready)

    @property
    def is_ready(self) -> bool:
        """True once the zygote can fork (without waiting)."""
        ready = self._ready
        return (
            not self.disabled
            and ready is not None
            and ready.done()
            and not ready.cancelled()
            and ready.exception() is None
        )

    @property
    def started(self) -> bool:
        return self._ready is not None

    def disable(self, reason: str) -> None:
        """Stop forking for the rest of the run; the reason is logged once."""
        if self.disabled is None:
            self.disabled = reason
            log.warning("rlm: starting kernels cold: %s", reason)

    async def fork(
        self, argv: list[str], env: dict[str, str], cwd: str, timeout: float = 60.0
    ) -> ForkedProcess:
        """A forked kernel on ``argv``'s connection file, once ``IPKernelApp`` is initialised."""
        await self.ready()
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 20)
        except OSError as exc:
            raise ForkError(f"zygote unreachable: {exc.strerror or exc}") from None
        process: ForkedProcess | None = None
        try:
            writer.write((json.dumps({"argv": argv, "env": env, "cwd": cwd}) + "\n").encode())
            await writer.drain()
            pid = await asyncio.wait_for(_await_start(reader), timeout)
            process = ForkedProcess(pid, reader, writer)
            return process
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            raise ForkError(f"fork request failed: {type(exc).__name__}: {exc}") from None
        finally:
            if process is None:
                writer.close()  # the zygote kills a kernel whose connection closes

    async def close(self) -> None:
        """Stop the zygote; it kills whatever kernels it still has."""
        proc, self._proc = self._proc, None
        _REGISTRY.pop(self.path, None)
        ready = self._ready
        if ready is not None:
            if not ready.done():
                ready.cancel()
            await asyncio.wait([ready])
            if not ready.cancelled():
                ready.exception()  # retrieved: no "never retrieved" warning
        if isinstance(proc, subprocess.Popen):
            await asyncio.to_thread(_stop, proc)
        elif proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop an adopted zygote (SIGTERM: it kills its kernels first; SIGKILL after 5 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
