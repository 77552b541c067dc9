"""The root kernel, started speculatively at CLI start, before the CLI's heavy imports.

Why: a cold kernel takes about a second of CPU to start, and the CLI itself imports for about
as long; started one after the other, the first cell waits for both. Started here, the kernel
initialises on the second core while the CLI imports, and the orchestrator adopts it for the
root agent (:mod:`rlm.kernels.prestart_provisioner`), handing it the agent's environment and
working directory in its bootstrap, as for a pooled kernel.

When the run may spawn sub-agents (``RLM_MAX_DEPTH`` or ``--max-depth`` above 0, forking on),
it starts the run's zygote instead (:mod:`rlm.zygote`) and, from a thread, asks it for the
root kernel as soon as it is ready: the root kernel then shares the zygote's imported pages
with every sub-agent kernel instead of being an interpreter of its own (about 15 MiB less
PSS, and one cold interpreter's CPU less while the CLI imports). The launcher adopts the
zygote (:meth:`rlm.kernels.fork_client.Zygote.adopt`) and the forked kernel as it would the
cold one.

It is only a guess made from the environment before the settings are read: the launcher adopts
it only if the kernel the run would start is the same (no sandbox, no kernel limits, no
gateway or installed kernelspec, the same filtered environment, see :func:`take`); any other
kernel, and a prestarted kernel or zygote nobody adopted, is killed at exit. This module imports
only the standard library and :mod:`rlm.kernels.environment` (the same credential filtering a
kernel started later gets).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from rlm.kernels.environment import kernel_environment

__all__ = [
    "KERNEL_ARGS",
    "Prestarted",
    "PrestartedZygote",
    "discard",
    "prestart",
    "take",
    "take_zygote",
]

#: The kernel's arguments after ``-m ipykernel_launcher -f FILE``, as rlm's kernelspec has them,
#: plus a warm-up run while the kernel initialises (the CLI is still importing): the modules
#: every agent's bootstrap imports, and the shell's slow first execution, as a pooled kernel's
#: warm-up does (no name is left in the user namespace).
KERNEL_ARGS = (
    "--HistoryManager.enabled=False",
    "--IPKernelApp.quiet=True",
    # an expression worth None: IPython's display hook would keep a value in ``_``
    "--IPKernelApp.exec_lines=[__import__(m) for m in ('rlm.inkernel', 'rlm.zygote.child')] and None",
)

#: Variables that change how (or where) rlm starts kernels: with any set, nothing is prestarted.
_DIFFERENT_KERNEL = (
    "RLM_KERNEL_GATEWAY",
    "RLM_KERNEL_SPEC",
    "RLM_KERNEL_MEMORY",
    "RLM_KERNEL_PROCESSES",
)


#: What the zygote process runs (``python -c ZYGOTE_CODE MODULE...``), here and in
#: :mod:`rlm.kernels.fork_client`.
ZYGOTE_CODE = "import sys; del sys.path[0]; from rlm.zygote.server import main; sys.exit(main())"


class Forked:
    """A ``Popen``-like view of the root kernel the prestarted zygote forks (not our child).

    The fork is asked for by a thread once the zygote is ready; ``pid`` and ``sock`` (the
    request connection, whose close makes the zygote kill the kernel) are set when the kernel
    reported ``started``, ``error`` when it could not start, and ``done`` then.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.done = threading.Event()
        self._dropped = False

    def poll(self) -> int | None:
        """None while starting or alive; 1 once it failed or is gone."""
        if not self.done.is_set():
            return None
        if self.error is not None or self.pid is None:
            return 1
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return 1
        except PermissionError:
            pass
        return None

    def fork(self, zygote: PrestartedZygote, request: dict[str, Any], timeout: float) -> None:
        """Ask ``zygote`` for the kernel (in the zygote's thread; blocking)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(timeout)
            conn.connect(zygote.path)
            conn.sendall((json.dumps(request) + "\n").encode())
            buffer, messages = b"", list[dict[str, Any]]()
            while len(messages) < 2:  # {"pid": N} and {"started": true}, in either order
                chunk = conn.recv(65536)
                if not chunk:
                    raise OSError("the zygote closed the connection")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                messages += [json.loads(line) for line in lines if line.strip()]
            found = {k: v for m in messages for k, v in m.items()}
            if "error" in found or "exit" in found or "pid" not in found or buffer:
                raise OSError(f"the forked kernel did not start: {messages}")
            conn.settimeout(None)
            self.pid = int(found["pid"])
            if self._dropped:
                raise OSError("discarded while starting")
            self.sock, conn = conn, None  # type: ignore[assignment]
        except (OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                conn.close()  # the zygote kills a kernel whose connection closes
            self.done.set()

    def kill(self) -> None:
        """Close the request connection: the zygote kills the kernel's process group."""
        self._dropped = True
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


@dataclass
class Prestarted:
    """A kernel process started before the orchestrator existed, and how to reach it."""

    process: subprocess.Popen[bytes] | Forked
    connection: dict[str, Any]
    env: dict[str, str]
    folder: str

    def kill(self) -> None:
        """Kill the kernel's process group (it leads its own session) and remove its files."""
        if isinstance(self.process, Forked):
            self.process.kill()
        elif self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class PrestartedZygote:
    """The run's zygote, started at CLI start; its ready line is read by a thread."""

    process: subprocess.Popen[bytes]
    path: str
    folder: str
    env: dict[str, str]
    preload: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """The zygote's ready message (blocking: call it in a thread); raises ``RuntimeError``
        with the reason when it failed, ``TimeoutError`` when it took longer than ``timeout``."""
        if not self.ready.wait(timeout):
            raise TimeoutError(f"zygote not ready within {timeout:g} s")
        if self.error is not None:
            raise RuntimeError(self.error)
        return self.info

    def read_ready(self) -> None:
        """Read the zygote's one line on stdout (blocking)."""
        assert self.process.stdout is not None
        try:
            line = self.process.stdout.readline()
            message = json.loads(line) if line else {}
        except (OSError, ValueError):
            message = {}
        if message.get("ready"):
            self.info = message
        else:
            log = os.path.join(self.folder, "zygote.log")
            self.error = message.get("error") or f"zygote exited (see {log})"
        self.ready.set()

    def kill(self) -> None:
        """Stop the zygote (it kills its kernels first) and remove its folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_current: Prestarted | None = None
_zygote: PrestartedZygote | None = None


def wanted(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether this command line may run an agent on a local, unconfined, unlimited kernel:
    only then is a guess worth a process (settings flags that change kernels rule it out)."""
    if environ.get("RLM_SANDBOX", "off").strip().lower() not in ("", "off"):
        return False
    if any(environ.get(name) for name in _DIFFERENT_KERNEL):
        return False
    if not sys.platform.startswith("linux"):
        return False
    options = argv[: argv.index("--")] if "--" in argv else argv
    skip = ("-h", "--help", "--version", "--print-system-prompt", "--acp", "--sandbox", "--kernel")
    return not any(arg.startswith(skip) for arg in options)


def _option(argv: list[str], flag: str) -> str | None:
    """The last value of ``--flag V`` or ``--flag=V`` before ``--``."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    value = None
    for i, arg in enumerate(options):
        if arg == flag and i + 1 < len(options):
            value = options[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def may_spawn(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the run may spawn sub-agents on forked kernels (``--max-depth`` or
    ``RLM_MAX_DEPTH`` above 0, ``--kernel-start``/``RLM_KERNEL_START`` not ``cold``): then the
    zygote is worth starting now and the root kernel is forked from it."""
    start = _option(argv, "--kernel-start") or environ.get("RLM_KERNEL_START", "fork")
    if start.strip().lower() != "fork" or not hasattr(os, "fork"):
        return False
    depth = _option(argv, "--max-depth") or environ.get("RLM_MAX_DEPTH", "0")
    try:
        return int(depth) > 0
    except ValueError:
        return False  # the settings will say what is wrong with it


def _connection(folder: str) -> tuple[str, dict[str, Any]]:
    """A new connection file for a kernel on ipc sockets in ``folder``."""
    connection: dict[str, Any] = {
        "transport": "ipc",
        "ip": os.path.join(folder, "kernel"),
        "key": secrets.token_hex(32),
        "signature_scheme": "hmac-sha256",
        "kernel_name": "rlm-prestarted",
        **{f"{c}_port": n for n, c in enumerate(("shell", "iopub", "stdin", "control", "hb"), 1)},
    }
    path = os.path.join(folder, "kernel.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(connection, handle)
    return path, connection


def prestart(cwd: str | None = None, argv: list[str] | None = None) -> Prestarted | None:
    """Start the root kernel now (no waiting for it): forked from a zygote started now when the
    run may spawn (:func:`may_spawn` of ``argv``, default the command line), else cold.
    None if it cannot start."""
    global _current
    if _current is not None:
        return _current
    # As the orchestrator's base environment of an unconfined kernel (rlm.sandbox.policy)
    env = {**kernel_environment(), "RLM_SANDBOX": "off"}
    spawning = may_spawn(sys.argv[1:] if argv is None else argv, os.environ)
    zygote = _start_zygote(env) if spawning else None
    folder = tempfile.mkdtemp(prefix="rlm-prestart-")
    path, connection = _connection(folder)
    kernel_argv = [sys.executable, "-m", "ipykernel_launcher", "-f", path, *KERNEL_ARGS]
    if zygote is not None:
        from rlm.zygote.prepared import KERNEL_FLAGS

        # Exactly the kernelspec's flags, no warm-up: the zygote has imported it all and
        # warmed a shell, and with these flags the child initialises the app the zygote
        # prepared (rlm.zygote.prepared), as every other forked kernel does.
        forked = Forked()
        kernel_argv = [*kernel_argv[:5], *KERNEL_FLAGS]
        request = {"argv": kernel_argv, "env": env, "cwd": cwd or os.getcwd()}
        _current = Prestarted(forked, connection, env, folder)
        threading.Thread(
            target=_zygote_thread, args=(zygote, forked, request), name="rlm-prestart", daemon=True
        ).start()
        atexit.register(discard)
        return _current
    try:
        process = subprocess.Popen(
            kernel_argv,
            env={**env, "JPY_PARENT_PID": str(os.getpid())},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    _current = Prestarted(process, connection, env, folder)
    atexit.register(discard)
    return _current


def _start_zygote(env: dict[str, str]) -> PrestartedZygote | None:
    """Spawn the zygote as :meth:`rlm.kernels.fork_client.Zygote.start` does, from this (the
    main) thread: its parent-death signal follows the thread that started it."""
    global _zygote
    from rlm.zygote import preload_modules

    preload = preload_modules(env)
    folder = tempfile.mkdtemp(prefix="rlm-zygote-")
    path = os.path.join(folder, "zygote.sock")
    fd = os.open(os.path.join(folder, "zygote.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with os.fdopen(fd, "ab") as logfile:
            process = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE_CODE, *preload],
                env={**env, "RLM_ZYGOTE_SOCKET": path, "RLM_ZYGOTE_PARENT": str(os.getpid())},
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=logfile,
                start_new_session=True,
            )
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    _zygote = PrestartedZygote(process, path, folder, env, preload)
    return _zygote


def _zygote_thread(zygote: PrestartedZygote, forked: Forked, request: dict[str, Any]) -> None:
    """Wait for the zygote, then fork the root kernel from it."""
    zygote.read_ready()
    if zygote.error is not None:
        forked.error = zygote.error
        forked.done.set()
        return
    forked.fork(zygote, request, timeout=60.0)


def take(env: dict[str, str]) -> Prestarted | None:
    """The prestarted kernel for a kernel whose base environment is ``env`` (before the
    agent's own variables), once; None (and the prestarted kernel killed) if it was started
    with another environment or has died."""
    global _current
    pre, _current = _current, None
    if pre is None:
        return None
    if pre.process.poll() is not None or pre.env != env:
        pre.kill()
        return None
    return pre


def take_zygote(env: dict[str, str], preload: list[str]) -> PrestartedZygote | None:
    """The prestarted zygote for a launcher whose kernels' base environment is ``env`` and
    whose zygote preloads ``preload``, once; None (and the zygote, with a root kernel forked
    from it, killed) if it differs or has died."""
    global _zygote, _current
    zygote, _zygote = _zygote, None
    if zygote is None:
        return None
    if zygote.process.poll() is not None or zygote.env != env or zygote.preload != preload:
        zygote.kill()  # first: its kernels are dead once it is (see discard)
        if _current is not None and isinstance(_current.process, Forked):
            _current.kill()
            _current = None
        return None
    return zygote


def discard() -> None:
    """Kill a prestarted kernel and zygote nobody adopted (at exit, or when the run needs
    another)."""
    global _current, _zygote
    (pre, _current), (zygote, _zygote) = (_current, None), (_zygote, None)
    # The zygote first: it kills its kernels before it exits (and they have its death as
    # their parent-death signal). Killed the other way round, a root kernel the zygote was
    # forking at that moment could still write its connection file into the folder that
    # ``pre.kill`` has just removed, leaving an ``rlm-prestart-*`` folder behind.
    if zygote is not None:
        zygote.kill()
    if pre is not None:
        pre.kill()
