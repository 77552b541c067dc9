"""Process limits the orchestrator needs for large trees of agents.

Every kernel costs the orchestrator several file descriptors (its ZeroMQ sockets, the
control channel's connection, the kernel process's pipes), and the common soft limit of
1,024 open files runs out near 300 kernels, long before memory or CPU do. The hard limit is
what the administrator allows; raising the soft limit up to it needs no privilege, so the
orchestrator does it once at start (kernels and other children inherit it).
"""

from __future__ import annotations

import resource
from pathlib import Path

#: Used when the hard limit is "unlimited": the kernel caps open files at ``fs.nr_open``.
_NR_OPEN = Path("/proc/sys/fs/nr_open")
_FALLBACK_CAP = 1 << 20


def _cap(hard: int) -> int:
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return _FALLBACK_CAP


def raise_open_files_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns the soft limit
    now in force. Never lowers it, and leaves it as it was if the system refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _cap(hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
