"""What runs in a forked child (it becomes an ipykernel) and in a pooled kernel (it adopts an
agent's environment and working directory when it is handed out)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

from rlm.sandbox import caps, limits
from rlm.sandbox.escapees import become_subreaper
from rlm.sandbox.landlock import apply_from_env
from rlm.zygote._linux import set_parent_death_signal
from rlm.zygote.prepared import kernel_app

__all__ = ["adopt", "adopt_code", "become_kernel", "send"]


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    """One zygote-protocol message; a peer that went away is not an error here."""
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(message) + "\n").encode())


def _reseed() -> None:
    """Forked children share the zygote's RNG state: give each its own."""
    random.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed()


def become_kernel(
    conn: socket.socket, request: dict[str, Any], inherited: list[int], zygote: int
) -> NoReturn:
    """Turn this freshly forked child into the kernel ``request`` describes; never returns.

    ``request["argv"]`` is the kernelspec's command (``python -m ipykernel_launcher -f FILE
    ...``); the arguments after the module name go to ``IPKernelApp``.
    """
    code = 1
    try:
        # Undo the zygote's signal set-up first: its handlers must never run in a kernel.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()  # own session and process group: interrupt and kill reach the whole group
        become_subreaper()  # orphans of its cells stay in its tree (rlm.sandbox.escapees)
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != zygote:
            os._exit(1)  # the zygote died between fork and prctl
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        env = {str(k): str(v) for k, v in request["env"].items()}
        # ipykernel's parent poller watches os.getppid(): our real parent is the zygote (which
        # itself dies with the orchestrator), so that is the pid to watch.
        env["JPY_PARENT_PID"] = str(zygote)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(request["cwd"])
        _reseed()
        argv = [str(a) for a in request["argv"]]
        if argv[1:3] == ["-m", "rlm.sandbox.launch"]:
            argv = [argv[0], *argv[3:]]  # the sandbox is applied here instead:
        # still single-threaded, before the kernel reads its connection file. Limits first
        # (cgroupfs is not writable under Landlock), capabilities last.
        limits.apply_from_env(env)
        apply_from_env(env)
        caps.drop_from_env(env)
        if len(argv) < 3 or argv[1:3] != ["-m", "ipykernel_launcher"]:
            raise ValueError(f"not an ipykernel_launcher command: {argv[:3]}")
        import ipykernel_launcher

        sys.argv = [ipykernel_launcher.__file__ or "ipykernel_launcher", *argv[3:]]
        app, app_argv = kernel_app(argv[3:])  # parsed in the zygote when it can be
        # The trait's default was read from the zygote's environment at import time.
        app.parent_handle = zygote
        app.initialize(app_argv)
        send(conn, {"started": True})
        conn.close()
        app.start()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        traceback.print_exc()
        send(conn, {"error": f"{type(exc).__name__}: {exc}"})
    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    finally:
        os._exit(code)


def adopt(env: dict[str, str], cwd: str) -> None:
    """Give a pooled kernel the environment and working directory of the agent taking it.

    The kernel's own ``JPY_*`` variables are kept; ``sys.path`` keeps following the working
    directory as ``''`` does.
    """
    keep = {k: v for k, v in os.environ.items() if k.startswith("JPY_")}
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(keep)
    os.chdir(cwd)


def adopt_code(env: dict[str, str], cwd: str) -> str:
    """Kernel code that calls :func:`adopt` without leaving names in the user namespace."""
    return f"__import__('rlm.zygote.child', fromlist=['adopt']).adopt({env!r}, {cwd!r})\n"
