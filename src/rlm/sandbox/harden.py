"""Orchestrator hardening, always on: what keeps model-written code (which runs as the same
user) away from the orchestrator's credentials.

A cell can read any same-uid process's ``/proc/<pid>/environ`` and ``/proc/<pid>/mem`` and
ptrace it, unless that process is *non-dumpable*. The orchestrator holds the API key and every
agent's control secret, so :func:`harden_orchestrator` makes it non-dumpable (what ssh-agent
does) and overwrites the credentials in its initial environment block, the memory
``/proc/<pid>/environ`` shows, which a root cell (``CAP_SYS_PTRACE``) can still read.

``os.environ`` is left as it is: rlm is also a library, and the program embedding it may read
its own environment again (a second ``rlm.run`` loads the settings again). Kernels and the bash
tool never inherit it anyway (see :mod:`rlm.kernels.environment`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["harden_orchestrator", "is_dumpable", "redact_url", "set_dumpable", "wipe_environ"]

log = logging.getLogger("rlm.sandbox")

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
#: ``/proc/<pid>/stat`` fields (1-based) holding the start and end of the initial environment.
_ENV_START, _ENV_END = 50, 51


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library already loaded in this process (no ``find_library``: it runs
    ``ldconfig``, a subprocess, which the fork zygote's children must not pay for)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def set_dumpable(dumpable: bool) -> bool:
    """``prctl(PR_SET_DUMPABLE)`` for this process; False where it is not available."""
    libc = _libc()
    if libc is None:
        return False
    return libc.prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) == 0


def is_dumpable() -> bool | None:
    """This process's dumpable flag (None off Linux)."""
    libc = _libc()
    return None if libc is None else bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def wipe_environ(secret: Callable[[str], bool]) -> list[str]:
    """Overwrite the values of the variables named ``secret`` in this process's initial
    environment block (what ``/proc/self/environ`` shows); returns the names wiped.

    libc's ``environ`` still points into that block for variables nobody changed, and a
    subprocess started without ``env=`` inherits ``environ``: each wiped variable still in
    ``os.environ`` is therefore set again first, which moves libc's copy elsewhere.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        # fields[0] is field 3 (the state): field n is fields[n - 3].
        start, end = int(fields[_ENV_START - 3]), int(fields[_ENV_END - 3])
    except (OSError, IndexError, ValueError):
        return []
    if not 0 < start < end:
        return []
    block = ctypes.string_at(start, end - start)
    wiped = []
    offset = 0
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        decoded = name.decode("utf-8", "replace")
        if eq and value and secret(decoded):
            if decoded in os.environ:
                os.putenv(decoded, os.environ[decoded])
            ctypes.memset(start + offset + len(name) + 1, ord("*"), len(value))
            wiped.append(decoded)
        offset += len(entry) + 1
    return wiped


def redact_url(url: str | None) -> str | None:
    """``url`` without user info, query and fragment: what may be shown or logged of an
    endpoint (``https://user:pw@host/v1?api-key=k`` becomes ``https://host/v1``)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_wiped = False


def harden_orchestrator() -> None:
    """Make this process non-dumpable and wipe credentials from its initial environment block.

    Cheap and idempotent (every orchestrator calls it); quiet where Linux facilities are
    missing (logged at debug level). The dumpable flag is reset by ``exec``, so kernels started
    cold and the zygote (an exec'd interpreter) are unaffected.
    """
    from rlm.kernels.environment import is_credential

    global _wiped
    if not set_dumpable(False):
        log.debug("rlm: cannot make the orchestrator non-dumpable on this system")
    if not _wiped:  # the initial block never changes: once per process is enough
        _wiped = True
        with contextlib.suppress(OSError, ValueError):
            wipe_environ(is_credential)
