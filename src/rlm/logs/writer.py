"""The session folder of one agent: ``meta.json`` and ``messages.jsonl``.

``messages.jsonl`` is append-only and flushed line by line, so a killed run leaves a valid
file holding everything up to the kill. A line with a ``role`` is a chat message exactly as
sent to or received from the model, plus ``timestamp``; a line with an ``event`` records
something that changed the live context or the kernel (see docs/sessions.md).
``meta.json`` is rewritten atomically (temp file + rename) so readers never see half of it.
While an agent runs, its counters (usage, turns, the children's status) are rewritten at most
every ``META_DELAY`` seconds; creation, the end of every turn and the end of the agent write
at once. The messages themselves are never delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlm.errors import LogWriteError, SessionBusyError
from rlm.logs.store import read_log
from rlm.safeio import open_regular
from rlm.schema import Status
from rlm.schema.meta import AgentMeta, MetaError

__all__ = ["META_DELAY", "SessionLog", "clean_text", "new_session_id", "now_iso"]

#: Seconds ``meta.json`` may lag behind a running agent's counters. Rewriting it on every
#: model reply cost more than a tool round's Jupyter round trip (see docs/performance.md).
META_DELAY = 0.1


def clean_text(text: str) -> str:
    """Text that can be written as UTF-8: undecodable bytes (carried as lone surrogates by
    ``surrogateescape``, as argv and file names are) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def now_iso() -> str:
    """UTC timestamp with microseconds: precise enough to order parallel agents' lines."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_session_id() -> str:
    """Sortable by start time, unique without coordination: ``20261123-121314-a1b2c3``."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class SessionLog:
    """Writes one agent's folder. Creating it writes ``meta.json`` with status ``running``.

    ``meta`` is an :class:`~rlm.schema.meta.AgentMeta`: assigning a field validates it, so
    what reaches the file always reads back through the same schema.

    While it is open the folder is locked (``flock`` on ``messages.jsonl``), so a second
    ``--resume`` of the same session is refused instead of interleaving its lines. A write
    that fails (disk full, file size limit) raises :class:`~rlm.errors.LogWriteError`; the
    log is cut back to its last complete line and no temp file is left."""

    def __init__(
        self,
        path: Path,
        meta: AgentMeta | dict[str, Any],
        *,
        reopen: bool = False,
        _fd: int | None = None,
    ) -> None:
        self.path = path
        self.meta = meta if isinstance(meta, AgentMeta) else AgentMeta.model_validate(meta)
        if reopen:
            self.meta.status = Status.RUNNING
            self.meta.pid = os.getpid()
            self.meta.resumed_at = now_iso()
            self.meta.ended_at = None
        else:
            path.mkdir(mode=0o700, parents=True, exist_ok=False)
            path.chmod(0o700)  # owner-only whatever the umask: logs quote what cells saw
            self.meta.status = Status.RUNNING
            if self.meta.started_at is None:
                self.meta.started_at = now_iso()
        self._fd = _fd if _fd is not None else _open_locked(path)
        self._size = os.fstat(self._fd).st_size
        self.failed: LogWriteError | None = None
        """The first write failure; every later append raises it again."""
        self.lines = 0
        self._pending: asyncio.TimerHandle | None = None
        try:
            self.write_meta()
        except BaseException:
            self._close_fd()
            raise

    @classmethod
    def reopen(cls, path: Path) -> tuple[SessionLog, list[dict[str, Any]]]:
        """Continue an existing folder: its meta, and its log lines (a torn last line, as a
        kill can leave, is dropped, and cut off the file so new lines start on their own).
        Raises :class:`~rlm.schema.meta.MetaError` when ``meta.json`` or ``messages.jsonl``
        cannot be read, :class:`~rlm.errors.SessionBusyError` while another rlm writes it."""
        fd = _open_locked(path)
        try:
            meta = AgentMeta.read(path)
            log = read_log(path / "messages.jsonl")
            if log.error:
                raise MetaError(log.error)
            _drop_torn_line(fd)
            return cls(path, meta, reopen=True, _fd=fd), log.records
        except BaseException:
            os.close(fd)
            raise

    def append(self, record: dict[str, Any]) -> None:
        """Append one message or event line, whole, and hand it to the OS at once."""
        if self.failed is not None:
            raise self.failed
        line = json.dumps({**record, "timestamp": now_iso()}, ensure_ascii=False, default=str)
        data = (line + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):  # keep the last complete line intact
                os.ftruncate(self._fd, self._size)
            raise self._fail(exc, self.path / "messages.jsonl") from None
        self._size += len(data)
        self.lines += 1

    def event(self, event: str, /, **fields: Any) -> None:
        self.append({"event": event, **fields})

    def update(self, **fields: Any) -> None:
        """Change meta fields; ``meta.json`` follows within ``META_DELAY`` seconds (at once
        outside an event loop)."""
        self._set(fields)
        if self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.write_meta()
            return
        self._pending = loop.call_later(META_DELAY, self._delayed_meta)

    def _delayed_meta(self) -> None:
        """The timer's write: a failure is kept for the next append to raise (an exception
        escaping a timer callback would only be printed by asyncio, as a traceback)."""
        with contextlib.suppress(LogWriteError):
            self.write_meta()

    def flush(self) -> None:
        """Write ``meta.json`` now if a change is waiting."""
        if self._pending is not None:
            self.write_meta()

    def write_meta(self) -> None:
        """Rewrite ``meta.json`` now (atomically: temp file and rename, the temp file is
        removed when that fails). After a failed append it is tried but not raised again."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".meta-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.meta.to_json(), handle, indent=2, ensure_ascii=False, default=str)
                handle.write("\n")
            os.replace(tmp, self.path / "meta.json")
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if self.failed is None:
                raise self._fail(exc, self.path / "meta.json") from None

    def close(self, **fields: Any) -> None:
        """Final meta (status, answer, ...) with ``ended_at``; the log file is closed (and
        the session unlocked) even when the meta cannot be written."""
        self._set({"ended_at": now_iso(), **fields})
        try:
            self.write_meta()
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _fail(self, exc: OSError, file: Path) -> LogWriteError:
        self.failed = LogWriteError(
            f"cannot write the session log {file}: {exc.strerror or exc}",
            session_path=str(self.path),
        )
        return self.failed

    def _set(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self.meta, key, value)


def _open_locked(folder: Path) -> int:
    """``messages.jsonl`` opened for appending (created if missing; never through a symlink
    or into a FIFO), locked against a second writer."""
    fd = open_regular(
        folder / "messages.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, mode=0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = _meta_pid(folder)
        by = f" (pid {pid})" if pid else ""
        raise SessionBusyError(
            f"session {folder.name} is in use by another rlm process{by}; "
            "wait for it to end or resume it later"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _meta_pid(folder: Path) -> int | None:
    try:
        return AgentMeta.read(folder).pid
    except MetaError:
        return None


def _drop_torn_line(fd: int) -> None:
    """Cut an unterminated last line (a kill mid-write) so the next line starts clean."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - (1 << 20))
    while True:
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        if start == 0:
            os.ftruncate(fd, 0)
            return
        size, start = start, max(0, start - (1 << 20))
