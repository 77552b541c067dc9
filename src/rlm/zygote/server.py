"""The zygote process: import everything once, then fork one child per kernel request.

Started by :class:`rlm.kernels.fork_client.Zygote` as ``python -c "...; main()" [MODULE ...]`` in a
session of its own, with the kernels' environment plus ``RLM_ZYGOTE_SOCKET`` (where to listen)
and ``RLM_ZYGOTE_PARENT`` (the orchestrator's pid; both removed at once), stdin from
``/dev/null``, stdout a pipe and stderr a log file in the run directory. It prints exactly one JSON line on stdout (``{"ready": ...}`` or ``{"error": ...}``)
and from then on writes only to the log (a pipe nobody drains would hang the children).

Protocol, one unix stream connection per kernel, newline-delimited JSON: the client sends
``{"argv": [...], "env": {...}, "cwd": "..."}``; the zygote forks and answers
``{"pid": N}``; the child answers ``{"started": true}`` once ``IPKernelApp.initialize`` is done
(or ``{"error": "..."}``); when the child exits the zygote reaps it and sends
``{"exit": code}`` (negative: killed by that signal). If the client closes the connection
while the kernel lives, the zygote kills the kernel's process group.

Nothing here may create a zmq context, a thread or an event loop before ``fork``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
from typing import Any

from rlm.sandbox.escapees import become_subreaper, kill_descendants
from rlm.zygote import CORE_MODULES
from rlm.zygote._linux import set_parent_death_signal
from rlm.zygote.child import become_kernel, send
from rlm.zygote.heap import fill_free_blocks
from rlm.zygote.prepared import prepare

__all__ = ["main"]

_MAX_REQUEST = 16 * 1024 * 1024


def _say(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def preload(extra: list[str]) -> list[str]:
    """Import the core modules (errors propagate) and ``extra`` (missing ones skipped).

    ipykernel's debugger is left out of forked kernels: ``ipykernel.debugger`` is imported
    while ``debugpy`` cannot be, so it records debugpy as unavailable. An agent's kernel has
    no Jupyter debugger client, and with one each child would build a ``Debugger`` and a
    list of every module's file at start (~1.2 MiB of copied pages per child, measured)
    while the zygote holds 109 more modules. A cell can still ``import debugpy`` itself.
    """
    hidden = sys.modules.setdefault("debugpy", None)  # type: ignore[arg-type]
    try:
        for name in CORE_MODULES:
            importlib.import_module(name)
    finally:
        if hidden is None:
            del sys.modules["debugpy"]
    loaded = []
    for name in extra:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # not installed: nothing to preload
            raise
        loaded.append(name)
    # Build the caches a kernel would otherwise build after fork (in every child).
    import ipykernel_launcher  # noqa: F401  (sys.argv[0] of a cold kernel)

    prepare()  # the kernel app, its command line parsed once for every child

    return loaded


def native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


class _Terminate(Exception):
    pass


def _on_term(signum: int, frame: Any) -> None:
    raise _Terminate


class Server:
    """The fork loop: accept a request, fork, reap, report exits."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.pid = os.getpid()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.kernels: dict[int, socket.socket] = {}  # kernel pid -> its request connection

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.data == "accept":
                        self.accept()
                    elif key.data == "wake":
                        self.drain_wakeups()
                        self.reap()
                    else:
                        self.peer_event(key.data, key.fileobj)  # type: ignore[arg-type]
                self.reap()
        finally:
            if os.getpid() == self.pid:  # never in a child on its way to becoming a kernel
                self.kill_all()

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            request = self.read_request(conn)
            argv, env, cwd = request["argv"], request["env"], request["cwd"]
            if not (isinstance(argv, list) and isinstance(env, dict) and isinstance(cwd, str)):
                raise ValueError("malformed request")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            send(conn, {"error": f"bad request: {exc}"})
            conn.close()
            return
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            inherited = [self.listener.fileno(), self.selector.fileno(), self.wake_r]
            inherited.append(self.wake_w)
            inherited += [c.fileno() for c in self.kernels.values()]
            become_kernel(conn, request, inherited, self.pid)
        self.kernels[pid] = conn
        send(conn, {"pid": pid})
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)

    @staticmethod
    def read_request(conn: socket.socket) -> dict[str, Any]:
        conn.settimeout(10.0)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1 << 20)
            if not chunk:
                raise ValueError("connection closed before the request was complete")
            data += chunk
            if len(data) > _MAX_REQUEST:
                raise ValueError("request too large")
        conn.settimeout(None)
        return json.loads(data)

    def peer_event(self, pid: int, conn: socket.socket) -> None:
        """The orchestrator side wrote or closed: closed while the kernel lives means kill."""
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # nothing is expected from the client after the request
        self.selector.unregister(conn)
        self._killpg(pid)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.kernels.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            conn.setblocking(True)
            send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()

    @staticmethod
    def _killpg(pid: int) -> None:
        # The child is its own process group leader once it ran setsid(); before that the
        # group does not exist and only the process itself is killed.
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)

    def kill_all(self) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(self.kernels):
            self._killpg(pid)
        # Processes of cells that escaped their kernel were re-parented to us (a subreaper).
        kill_descendants(self.pid)
        for pid, conn in list(self.kernels.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            conn.close()
        self.kernels.clear()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def main(argv: list[str] | None = None) -> int:
    extra = sys.argv[1:] if argv is None else argv
    path = os.environ.pop("RLM_ZYGOTE_SOCKET")
    parent = int(os.environ.pop("RLM_ZYGOTE_PARENT"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal Ctrl-C is the orchestrator's
    signal.signal(signal.SIGTERM, _on_term)
    try:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent:
            return 1  # the orchestrator is already gone
        become_subreaper()  # what escapes a kernel comes back here, and ends with us
        loaded = preload(extra)
        if threading.active_count() != 1:
            names = ", ".join(t.name for t in threading.enumerate())
            raise RuntimeError(f"a preloaded module started a thread ({names}); cannot fork")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(socket.SOMAXCONN)  # a burst of children connects at once
        gc.collect()
        fill_free_blocks()  # a child's new objects go to pages of its own (rlm.zygote.heap)
        gc.freeze()  # keep the shared objects' pages out of every later collection
        _say(1, {
            "ready": True,
            "pid": os.getpid(),
            "preloaded": loaded,
            "modules": len(sys.modules),
            "native_threads": native_threads(),
        })  # fmt: skip
    except _Terminate:
        return 0
    except BaseException as exc:
        _say(1, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    os.dup2(2, 1)  # nothing more on the pipe: stdout goes to the log too
    listener_pid = os.getpid()
    try:
        Server(listener).serve()
    except _Terminate:
        pass
    finally:
        if os.getpid() == listener_pid:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return 0
