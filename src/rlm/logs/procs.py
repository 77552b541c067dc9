"""Whether a process is alive, the one place that reads ``/proc`` for it.

Used where rlm watches a process that is not its own child, so ``waitpid`` cannot tell:
the sessions reader (is the orchestrator that wrote ``status: running`` still there?) and
forked kernels (the zygote, their parent, may be gone). A zombie has exited, so it counts
as gone even though its pid still exists until its parent reaps it.
"""

from __future__ import annotations

import os

__all__ = ["pid_alive", "process_state"]


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from ``/proc/<pid>/stat`` (``R``, ``S``, ``Z``, ...);
    ``None`` without ``/proc`` or when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The state follows the parenthesised command name, which may itself contain ")".
    fields = stat.rpartition(b")")[2].split()
    return fields[0].decode("ascii", "replace") if fields else None


def pid_alive(pid: object) -> bool:
    """Whether process ``pid`` exists on this machine and has not exited (a zombie counts
    as gone). Anything but a positive int (e.g. a ``pid`` missing from a meta) is not alive."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return False
    return process_state(pid) not in ("Z", "X")
