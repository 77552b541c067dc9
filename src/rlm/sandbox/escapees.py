"""No escapees: what a cell started ends with its kernel, even if it left the kernel's
process group or session (``setsid``, ``setpgid``, a double fork).

Killing the kernel's process group misses a process that made a session of its own, and a
double-forked one is re-parented to the nearest *child subreaper* ancestor, else to init,
where nothing links it to the kernel any more. So every kernel makes itself a subreaper
(:func:`become_subreaper`: in every kernel's bootstrap, :data:`KERNEL_CODE`, before any
model-written code; also in ``python -m rlm.sandbox.launch`` and right after the fork in
:mod:`rlm.zygote.child`): orphans of its cells are re-parented to the
kernel and stay in its descendant tree, and :func:`kill_descendants` kills that tree before
the kernel is shut down or restarted. The zygote is a subreaper too, and kills any process
left with it when it ends. In ``strict`` the sandbox's PID namespace does the same on its own.

Only descendants of the kernel are ever signalled, each through a pidfd opened after it was
found and checked again afterwards, so a recycled pid never reaches a process that is not ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

__all__ = ["KERNEL_CODE", "become_subreaper", "children", "descendants", "kill_descendants"]

#: Kernel code (first in every bootstrap) that makes the kernel a subreaper, leaving no names.
KERNEL_CODE = "__import__('rlm.sandbox.escapees', fromlist=['_']).become_subreaper()\n"

_PR_SET_CHILD_SUBREAPER = 36
#: Rounds of find-and-kill: a killed process's orphans come back to the kernel (a subreaper)
#: and are found in the next round; a fork bomb outrunning this is the limits' business.
_ROUNDS = 20


def become_subreaper() -> bool:
    """``prctl(PR_SET_CHILD_SUBREAPER)`` for this process; False where it is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in ``/proc``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ppid = _ppid(int(entry))
        if ppid is not None:
            parents[int(entry)] = ppid
    return parents


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # Field 4; the command name (field 2) may hold spaces and parentheses.
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/<pid>/task/*/children`` is not always built in,
    so the parent links of all processes are read)."""
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    by_parent: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        by_parent.setdefault(parent, []).append(child)
    found: list[int] = []
    seen = {pid}
    frontier = [pid]
    while frontier:
        nxt = [c for p in frontier for c in by_parent.get(p, []) if c not in seen]
        seen.update(nxt)
        found += nxt
        frontier = nxt
    return found


def _kill(pid: int, tree: set[int]) -> bool:
    """SIGKILL ``pid`` if it is (still) a child of a member of ``tree``."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False  # gone already
    try:
        if _ppid(pid) not in tree:
            return False  # the pid was recycled by a process that is not ours
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def kill_descendants(pid: int | None) -> int:
    """SIGKILL every descendant of ``pid`` (not ``pid`` itself); returns how many were
    signalled. Blocking (it reads ``/proc``): call it in a thread from async code."""
    if pid is None or not hasattr(os, "pidfd_open"):
        return 0
    killed = 0
    for _ in range(_ROUNDS):
        found = [p for p in descendants(pid) if _state(p) != "Z"]
        if not found:
            break
        tree = {pid, *found}
        killed += sum(_kill(p, tree) for p in found)
    return killed


def _state(pid: int) -> str:
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat", "rb") as handle:
        return handle.read().rsplit(b")", 1)[1].split()[0].decode()
    return "?"
