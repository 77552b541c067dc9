"""Opening files that someone else may have planted: never block, never read without end.

A FIFO where a file is expected blocks ``open()`` until a writer appears (forever, with the
event loop inside it); a symlink to ``/dev/zero`` reads without end. Every reader of a file
rlm did not just write itself (session logs, ``--input`` files, files the ``edit`` tool
changes) goes through :func:`open_regular` or :func:`read_regular`: the open is non-blocking,
the opened descriptor must be a regular file (checked with ``fstat`` on the descriptor, so a
swap between a check and the open cannot fool it), and reads stop at a size limit. Failures
are :class:`OSError` with a ``strerror`` that reads well after "cannot read PATH: ".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["check_regular", "format_size", "open_regular", "read_regular"]


def format_size(size: int) -> str:
    """``10 MiB``, ``256 KiB``, ``12 bytes``: sizes as the error messages state them."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _refuse(path: str | Path, mode: int) -> OSError:
    kind = _kind(mode)
    text = kind if kind.startswith("not") else f"{kind}, not a regular file"
    return OSError(errno.EINVAL, text, str(path))


def open_regular(
    path: str | Path, flags: int = os.O_RDONLY, *, follow: bool = False, mode: int = 0o666
) -> int:
    """A descriptor of the regular file ``path`` opened with ``flags``, or ``OSError``.

    Never blocks: ``O_NONBLOCK`` makes opening a FIFO return at once (and is then cleared;
    it means nothing for regular files). Without ``follow`` a symbolic link is refused
    (``O_NOFOLLOW``) instead of opened: session logs are never links.
    """
    if follow:
        # stat first, so a device is refused before open() could have side effects.
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
        else:
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(path, st.st_mode)
    extra = os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags | extra, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise OSError(errno.ELOOP, "a symbolic link, not a regular file", str(path)) from None
        if exc.errno == errno.ENXIO:  # O_WRONLY|O_NONBLOCK on a FIFO without a reader
            raise OSError(errno.EINVAL, "a FIFO, not a regular file", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, st.st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | Path, limit: int, *, follow: bool = False) -> bytes:
    """The bytes of the regular file ``path``; ``OSError`` (``EFBIG``) past ``limit`` bytes.

    The size is checked before reading and the read stops one byte past the limit, so a
    file that grows while it is read cannot make this read more than ``limit + 1`` bytes.
    """
    fd = open_regular(path, follow=follow)
    with os.fdopen(fd, "rb") as handle:
        if os.fstat(fd).st_size > limit:
            raise _too_big(path, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_big(path, limit)
    return data


def check_regular(path: str | Path, limit: int, *, follow: bool = False) -> int:
    """The size of the regular file ``path`` if :func:`read_regular` would read it now (it
    is opened and checked the same way, without reading), else the same ``OSError``."""
    fd = open_regular(path, follow=follow)
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > limit:
        raise _too_big(path, limit)
    return size


def _too_big(path: str | Path, limit: int) -> OSError:
    return OSError(errno.EFBIG, f"larger than the limit of {format_size(limit)}", str(path))
