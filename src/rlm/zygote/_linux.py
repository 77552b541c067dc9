"""``prctl(PR_SET_PDEATHSIG)`` through ctypes: a signal when the parent process exits."""

from __future__ import annotations

import ctypes
import os
from functools import cache
from typing import Any

_PR_SET_PDEATHSIG = 1


@cache
def _libc() -> Any:
    # The running interpreter is linked against libc: no library search (no subprocess).
    return ctypes.CDLL(None, use_errno=True)


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent exits.

    Linux only; raises ``OSError`` if ``prctl`` fails. The signal fires when the parent
    *thread* that forked us exits, and is cleared by ``fork`` (children must set their own).
    """
    if _libc().prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
