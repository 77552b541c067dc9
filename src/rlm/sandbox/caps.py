"""A sandboxed kernel of a root orchestrator gives up root's capabilities.

Landlock confines writes, and a non-dumpable orchestrator keeps same-uid processes out of
its ``/proc/<pid>/environ`` and ``mem``; but a root process carries capabilities that walk
past permission checks: ``CAP_SYS_PTRACE`` (read or trace any process), ``CAP_DAC_OVERRIDE``
and ``CAP_DAC_READ_SEARCH`` (read any user's private files), ``CAP_KILL`` (signal any
process), ``CAP_SYS_ADMIN`` and the rest. Under ``RLM_SANDBOX=workspace`` (and ``strict``) a kernel
(and each bash command) started by root therefore drops *all* of them, from every set: the bounding set
(``PR_CAPBSET_DROP``, so that no ``execve`` of a root program or setuid binary gets them back),
the ambient set, and the effective, permitted and inheritable sets (``capset``). The process
keeps uid 0, so files root owns stay as reachable as their mode bits say, which is what a
normal user gets for their own files.

Applied like the Landlock policy, single-threaded right after the fork
(:mod:`rlm.zygote.child`) or in ``python -m rlm.sandbox.launch``.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["drop_all", "drop_from_env", "held"]

#: The sandbox modes whose processes drop capabilities (as rlm.sandbox.policy.CONFINED; a
#: copy, so that a forked kernel's start imports no more than it runs).
CONFINED = ("workspace", "strict")
_PR_CAPBSET_DROP = 24
_CAP_SETPCAP = 8
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def held() -> dict[str, int]:
    """This thread's capability sets (``CapEff``, ``CapPrm``, ``CapBnd``, ...) as bit masks;
    empty off Linux."""
    sets: dict[str, int] = {}
    try:
        for line in Path("/proc/thread-self/status").read_text().splitlines():
            if line.startswith("Cap"):
                name, _, value = line.partition(":")
                sets[name] = int(value.strip(), 16)
    except (OSError, ValueError):
        pass
    return sets


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 63


def drop_all() -> None:
    """Drop every capability of this thread and its future children; ``OSError`` when the
    kernel refuses (nothing should run then)."""
    libc = _libc()
    sets = held()
    # Dropping from the bounding set takes CAP_SETPCAP; without it (a process with only some
    # file capabilities) no_new_privs, which Landlock sets, already stops execve regaining any.
    bounding = sets.get("CapBnd", 0) if sets.get("CapEff", 0) >> _CAP_SETPCAP & 1 else 0
    for cap in range(_last_cap() + 1):
        if bounding >> cap & 1 and libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before 4.3: none
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()  # all zero: no capability in any set
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def drop_from_env(env: Mapping[str, str]) -> bool:
    """Drop every capability when ``env`` asks for a sandbox (``workspace``, ``strict``) and this process
    holds any (root, or file capabilities); False when there was nothing to do (a normal
    user: an empty permitted set, and no_new_privs keeps it empty across execve)."""
    if env.get("RLM_SANDBOX", "off") not in CONFINED or not sys.platform.startswith("linux"):
        return False
    sets = held()
    if not (sets.get("CapEff") or sets.get("CapPrm") or sets.get("CapAmb")):
        return False
    drop_all()
    return True
