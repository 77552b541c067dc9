"""``RLM_SANDBOX=strict``: each kernel and each bash command in a bubblewrap sandbox.

bubblewrap (``bwrap``) builds a throw-away mount, PID, network, IPC and UTS namespace for one
process tree: the root file system read-only, a private ``/tmp``, a minimal ``/dev``, its own
``/proc``, no network, every capability dropped (also for root, which could otherwise undo
the read-only mounts), and only the writable directories of the policy (the working
directory and the run directory, with the kernel's ipc sockets and temp dir) bound
read-write at their own paths, so the orchestrator reaches the kernel's sockets as before.
``RLM_SANDBOX_HIDDEN`` directories (other runs' session logs) are covered by an empty tmpfs.
The Python the kernel runs stays importable when it lives under ``/tmp`` (a virtualenv, a
checkout, a ``PYTHONPATH`` entry there): those directories are bound back read-only.
Landlock is applied inside on top (:mod:`rlm.sandbox.landlock`) where the kernel has it.

Why strict kernels start cold: a forked kernel cannot be moved into fresh mount and PID
namespaces after the fork, and a zygote run under bwrap would report its kernels' pids from
inside its namespace (the provisioner signals pids of ours) and put every kernel of the run in
one PID namespace. So each strict kernel is its own sandbox, started cold: no agent can see
or signal another agent's processes.

Facts this relies on (issue 15): the kernel exits at once when it inherits
``JPY_PARENT_PID`` (its parent poller watches a pid of the outer namespace), and a SIGINT
to ``bwrap`` kills the sandbox, so strict kernelspecs use message-mode interrupts.
``--die-with-parent`` and the PID namespace take every process of the sandbox along when the
kernel (or ``bwrap``) ends: nothing a cell started survives it, whatever it did.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

__all__ = ["BWRAP", "command_prefix", "unusable"]

BWRAP = "bwrap"


@functools.cache
def unusable() -> str | None:
    """Why bubblewrap cannot sandbox here (missing, or user namespaces refused as on Ubuntu
    24.04), or None when it can. Asked once per process by running a trivial sandbox."""
    path = shutil.which(BWRAP)
    if path is None:
        return "bubblewrap (bwrap) is not installed"
    probe = [path, *_namespaces(), "--ro-bind", "/", "/", "--proc", "/proc", "--", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap cannot run: {exc}"
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        return f"bwrap cannot create its namespaces: {detail[-1] if detail else 'failed'}"
    return None


def _namespaces() -> list[str]:
    return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL"]


def _paths(env: Mapping[str, str], name: str) -> list[str]:
    return [p for p in env.get(name, "").split(os.pathsep) if p]


def _python_dirs(env: Mapping[str, str]) -> list[str]:
    """The interpreter's and import path's entries under ``/tmp``, which the private ``/tmp``
    would otherwise hide from the kernel (it would fail to start, or a skill to import)."""
    candidates = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), *sys.path]
    candidates += _paths(env, "PYTHONPATH")
    found: list[str] = []
    for path in candidates:
        path = os.path.abspath(path) if path else ""
        if path.startswith("/tmp/") and os.path.exists(path) and path not in found:
            found.append(path)
    return found


def command_prefix(env: Mapping[str, str]) -> list[str]:
    """The ``bwrap ... --`` arguments that run a command under the strict policy in ``env``
    (``RLM_SANDBOX_WRITABLE``, ``RLM_SANDBOX_HIDDEN``); empty unless ``RLM_SANDBOX=strict``.

    Writable directories that do not exist are skipped (bwrap could not bind them), and so
    are hidden ones (nothing to hide).
    """
    if env.get("RLM_SANDBOX") != "strict":
        return []
    argv = [shutil.which(BWRAP) or BWRAP, *_namespaces(), "--die-with-parent", "--new-session"]
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in _python_dirs(env):
        argv += ["--ro-bind", path, path]
    for path in _paths(env, "RLM_SANDBOX_WRITABLE"):
        if os.path.isdir(path):
            argv += ["--bind", path, path]
    for path in _paths(env, "RLM_SANDBOX_HIDDEN"):
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
    # The kernel's parent poller would watch a pid that does not exist in its namespace.
    argv += ["--unsetenv", "JPY_PARENT_PID", "--"]
    return argv
