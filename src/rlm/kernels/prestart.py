"""The root kernel, started speculatively at CLI start, before the CLI's heavy imports.

Why: a cold kernel takes about a second of CPU to start, and the CLI itself imports for about
as long; started one after the other, the first cell waits for both. Started here, the kernel
initialises on the second core while the CLI imports, and the orchestrator adopts it for the
root agent (:mod:`rlm.kernels.prestart_provisioner`), handing it the agent's environment and
working directory in its bootstrap, as for a pooled kernel.

It is only a guess made from the environment before the settings are read: the launcher adopts
it only if the kernel the run would start is the same (no sandbox, no kernel limits, no
gateway or installed kernelspec, the same filtered environment, see :func:`take`); any other
kernel, and a prestarted kernel nobody adopted, is killed at exit. This module imports only
the standard library and :mod:`rlm.kernels.environment` (the same credential filtering a
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
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from rlm.kernels.environment import kernel_environment

__all__ = ["KERNEL_ARGS", "Prestarted", "discard", "prestart", "take"]

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


@dataclass
class Prestarted:
    """A kernel process started before the orchestrator existed, and how to reach it."""

    process: subprocess.Popen[bytes]
    connection: dict[str, Any]
    env: dict[str, str]
    folder: str

    def kill(self) -> None:
        """Kill the kernel's process group (it leads its own session) and remove its files."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_current: Prestarted | None = None


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


def prestart(cwd: str | None = None) -> Prestarted | None:
    """Start the kernel now (no waiting for it); None if it cannot start."""
    global _current
    if _current is not None:
        return _current
    # As the orchestrator's base environment of an unconfined kernel (rlm.sandbox.policy)
    env = {**kernel_environment(), "RLM_SANDBOX": "off"}
    folder = tempfile.mkdtemp(prefix="rlm-prestart-")
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
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", path, *KERNEL_ARGS]
    try:
        process = subprocess.Popen(
            argv,
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
    atexit.unregister(discard)
    return pre


def discard() -> None:
    """Kill a prestarted kernel nobody adopted (at exit, or when the run needs another)."""
    global _current
    pre, _current = _current, None
    if pre is not None:
        pre.kill()
