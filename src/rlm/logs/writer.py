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
import json
import os
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlm.logs.store import read_log
from rlm.schema import Status
from rlm.schema.meta import AgentMeta

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
    what reaches the file always reads back through the same schema."""

    def __init__(
        self, path: Path, meta: AgentMeta | dict[str, Any], *, reopen: bool = False
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
        self._messages = open(  # noqa: SIM115
            path / "messages.jsonl", "a", encoding="utf-8", opener=_owner_only
        )
        self.lines = 0
        self._pending: asyncio.TimerHandle | None = None
        self.write_meta()

    @classmethod
    def reopen(cls, path: Path) -> tuple[SessionLog, list[dict[str, Any]]]:
        """Continue an existing folder: its meta, and its log lines (a torn last line, as a
        kill can leave, is dropped). Raises :class:`~rlm.schema.meta.MetaError` when
        ``meta.json`` cannot be read at all."""
        meta = AgentMeta.read(path)
        lines = read_log(path / "messages.jsonl").records
        return cls(path, meta, reopen=True), lines

    def append(self, record: dict[str, Any]) -> None:
        """Append one message or event line and flush it to the OS at once."""
        line = json.dumps({**record, "timestamp": now_iso()}, ensure_ascii=False, default=str)
        self._messages.write(line + "\n")
        self._messages.flush()
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
        self._pending = loop.call_later(META_DELAY, self.write_meta)

    def flush(self) -> None:
        """Write ``meta.json`` now if a change is waiting."""
        if self._pending is not None:
            self.write_meta()

    def write_meta(self) -> None:
        """Rewrite ``meta.json`` now."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".meta-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.meta.to_json(), handle, indent=2, ensure_ascii=False, default=str)
            handle.write("\n")
        os.replace(tmp, self.path / "meta.json")

    def close(self, **fields: Any) -> None:
        """Final meta (status, answer, ...) with ``ended_at``; the log file is closed."""
        self._set({"ended_at": now_iso(), **fields})
        self.write_meta()
        if not self._messages.closed:
            self._messages.close()

    def _set(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self.meta, key, value)


def _owner_only(path: str, flags: int) -> int:
    """``open`` opener creating files ``0600`` (the umask can only take bits away)."""
    return os.open(path, flags, 0o600)
