"""Reading session trees under ``$RLM_HOME/sessions`` without ever writing to them.

A session is a folder ``sessions/<id>/`` holding the root agent's ``meta.json`` and
``messages.jsonl``; every sub-agent is a ``sub-<hex>`` folder inside its parent's folder.
Everything here tolerates sessions that are still running or were killed: a missing or
unreadable ``meta.json`` gives an empty meta, a line of ``messages.jsonl`` that is not valid
JSON (the last one, cut off by a kill) is skipped and counted, and a ``running`` status whose
orchestrator process is gone reads as ``interrupted``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError
from rlm.logs.procs import pid_alive
from rlm.safeio import read_regular
from rlm.schema import Status
from rlm.schema.meta import AgentMeta, MetaError, parse_time

__all__ = [
    "AgentNode",
    "Log",
    "SessionError",
    "default_home",
    "find_agent",
    "find_session",
    "list_sessions",
    "load_tree",
    "parse_time",
    "pid_alive",
    "read_log",
]

#: Largest ``messages.jsonl`` read whole (the output caps keep real logs far below it).
MAX_LOG_BYTES = 1 << 30

#: Folder names of sub-agents start with this.
SUB_PREFIX = "sub-"

#: The status shown for an agent whose meta says ``running`` but whose orchestrator is gone
#: (a reader's conclusion, never written to ``meta.json``, so not a :class:`Status`).
INTERRUPTED = "interrupted"


class SessionError(ConfigError):
    """Unknown or ambiguous id, bad option value: one line for the user, exit code 2."""


def default_home() -> Path:
    """``RLM_HOME`` read directly (other ``RLM_*`` variables may be invalid; they don't
    matter here), else the default of :class:`rlm.config.Settings`."""
    value = os.environ.get("RLM_HOME")
    if value:
        return Path(value).expanduser()
    from rlm.config import Settings

    return Path(Settings.model_fields["home"].default).expanduser()


@dataclass
class Log:
    """The readable lines of one ``messages.jsonl``."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    """Lines that were not a JSON object (typically the last line, cut off by a kill)."""
    error: str | None = None
    """Why the file could not be read at all (``None`` also when it does not exist)."""


def read_log(path: Path, limit: int = MAX_LOG_BYTES) -> Log:
    """The lines of a ``messages.jsonl``. Only a regular file is read (never a FIFO, a device
    or a symlink) and at most ``limit`` bytes: otherwise an empty log saying why."""
    log = Log()
    try:
        data = read_regular(path, limit)
    except FileNotFoundError:
        return log
    except OSError as exc:
        log.error = f"cannot read {path}: {exc.strerror or exc}"
        return log
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            log.skipped += 1
            continue
        if isinstance(record, dict):
            log.records.append(record)
        else:
            log.skipped += 1
    return log


def _read_meta(folder: Path) -> AgentMeta:
    """The folder's meta; an empty one (every key at its default) when unreadable."""
    try:
        return AgentMeta.read(folder)
    except MetaError:
        return AgentMeta()


class AgentNode:
    """One agent folder of a session tree; children are read on first access."""

    def __init__(self, path: Path, parent: AgentNode | None = None) -> None:
        self.path = path
        self.parent = parent
        self.meta = _read_meta(path)

    def __repr__(self) -> str:
        return f"AgentNode({self.id!r})"

    # -- identity --------------------------------------------------------------------------

    @property
    def root(self) -> AgentNode:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    @property
    def session_id(self) -> str:
        return self.root.path.name

    @property
    def rel(self) -> str:
        """The path below the session folder (``sub-ab12cd/sub-9c1d2e``; ``""`` for the root)."""
        parts: list[str] = []
        node: AgentNode | None = self
        while node is not None and node.parent is not None:
            parts.append(node.path.name)
            node = node.parent
        return "/".join(reversed(parts))

    @property
    def id(self) -> str:
        """``<session-id>`` or ``<session-id>/sub-../sub-..`` (as in ``meta.json``)."""
        return f"{self.session_id}/{self.rel}" if self.rel else self.session_id

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def depth(self) -> int:
        return self.rel.count("/") + 1 if self.rel else 0

    # -- meta ------------------------------------------------------------------------------

    @property
    def recorded_status(self) -> str:
        return str(self.meta.status or "unknown")

    @cached_property
    def status(self) -> str:
        """The status to show: ``running`` only while the orchestrator process lives."""
        status = self.recorded_status
        if status == Status.RUNNING and not pid_alive(self.meta.pid):
            return INTERRUPTED
        return status

    @property
    def spawned_state(self) -> str | None:
        """``idle`` or ``busy`` for a running child of ``rlm.spawn`` (its parent's
        ``children`` entry says which, between turns and during one), else None."""
        if self.parent is None or self.status != Status.RUNNING:
            return None
        for entry in self.parent.meta.children:
            if entry.name == self.name and entry.status in ("idle", "busy"):
                return str(entry.status)
        return None

    @property
    def stop_reason(self) -> str | None:
        return str(self.meta.stop_reason) if self.meta.stop_reason else None

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def model(self) -> str:
        return self.meta.model or "?"

    @property
    def turns(self) -> int:
        return self.meta.turns

    def usage(self, total: bool = False) -> tuple[int, int]:
        """``(prompt_tokens, completion_tokens)``, own or of the whole subtree."""
        return (self.meta.usage_total if total else self.meta.usage).pair()

    @property
    def llm_calls(self) -> int:
        """``rlm.llm`` calls this agent's cells made (each a line of ``llm_calls.jsonl``)."""
        return self.meta.llm_calls

    def llm_usage(self) -> tuple[int, int]:
        """``(prompt_tokens, completion_tokens)`` of those calls (part of ``usage()``)."""
        return self.meta.llm_usage.pair()

    @property
    def started(self) -> datetime | None:
        return self.meta.started

    @property
    def ended(self) -> datetime | None:
        return self.meta.ended

    def duration(self) -> tuple[float | None, bool]:
        """Seconds from start to end, and whether the agent is still going (so far only).

        An interrupted agent ends at the last write of its log (its modification time)."""
        start = self.started
        if start is None:
            return None, False
        end = self.ended
        if end is not None:
            return max(0.0, (end - start).total_seconds()), False
        if self.status == Status.RUNNING:
            return max(0.0, (datetime.now(timezone.utc) - start).total_seconds()), True
        try:
            mtime = (self.path / "messages.jsonl").stat().st_mtime
        except OSError:
            return None, False
        return max(0.0, mtime - start.timestamp()), False

    # -- log and tree ----------------------------------------------------------------------

    @cached_property
    def log(self) -> Log:
        return read_log(self.path / "messages.jsonl")

    @cached_property
    def children(self) -> list[AgentNode]:
        """Sub-agents in start order: the order of ``meta["children"]``, then any folder the
        meta does not list yet (a run killed between creating a child and updating the
        parent's meta), by start time."""
        try:
            folders = {
                p.name: p
                for p in self.path.iterdir()
                if p.is_dir() and p.name.startswith(SUB_PREFIX)
            }
        except OSError:
            return []
        order: list[str] = []
        for entry in self.meta.children:
            if entry.name in folders and entry.name not in order:
                order.append(entry.name)
        nodes = [AgentNode(folders[name], self) for name in order]
        rest = [AgentNode(p, self) for name, p in sorted(folders.items()) if name not in order]
        far = datetime.max.replace(tzinfo=timezone.utc)
        rest.sort(key=lambda n: (n.started or far, n.name))
        return nodes + rest

    def walk(self) -> list[AgentNode]:
        """This agent and its descendants, depth first, children in start order."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


def sessions_dir(home: Path) -> Path:
    return home / "sessions"


def list_sessions(home: Path) -> list[AgentNode]:
    """Root agents, newest first (by ``started_at``, then by id, which sorts by time)."""
    folder = sessions_dir(home)
    try:
        paths = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    nodes = [AgentNode(p) for p in paths]
    far = datetime.min.replace(tzinfo=timezone.utc)
    nodes.sort(key=lambda n: (n.started or far, n.name), reverse=True)
    return nodes


def _pick(names: list[str], ref: str, what: str, where: str) -> str:
    if ref in names:
        return ref
    hits = [name for name in names if name.startswith(ref)]
    if not hits and not ref.startswith(SUB_PREFIX) and what == "agent":
        hits = [name for name in names if name.startswith(SUB_PREFIX + ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise SessionError(f"no {what} matches {ref!r} in {where}")
    shown = ", ".join(sorted(hits)[:5]) + (", ..." if len(hits) > 5 else "")
    raise SessionError(f"{what} id prefix {ref!r} is ambiguous: {shown}")


#: Characters no id or id prefix holds: glob patterns and path syntax are refused, not
#: interpreted, so a reference can only name a folder below ``sessions/``.
_NOT_IN_IDS = frozenset("*?[]\\")


def _check_part(part: str, ref: str) -> None:
    if part in (".", "..") or _NOT_IN_IDS.intersection(part):
        raise SessionError(
            f"{ref!r} is not a session id: ids are folder names under sessions/, "
            "without '..', '\\' or glob characters (*?[])"
        )


def find_session(home: Path, ref: str, *, agents: bool = True) -> AgentNode:
    """The root agent of the session whose folder name is ``ref`` or uniquely starts with it.

    The one resolver of session ids (``rlm sessions`` and ``--resume``): ids are matched
    against the folder names of ``$RLM_HOME/sessions``, never joined to a path or globbed,
    so ``../x``, ``/abs/path`` and ``*`` are rejected with one line. With ``agents`` the
    reference may go on with an agent path (``<id>/sub-ab12/sub-cd``): then that agent is
    returned; without, any ``/`` is rejected.
    """
    ref = ref.strip()
    if ref.startswith("/") or (not agents and "/" in ref.rstrip("/")):
        raise SessionError(f"{ref!r} is not a session id: expected a folder name, not a path")
    ref = ref.rstrip("/")
    if not ref:
        raise SessionError("empty session id")
    for part in ref.split("/"):
        _check_part(part, ref)
    session_ref, _, agent_ref = ref.partition("/")
    folder = sessions_dir(home)
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        raise SessionError(f"no sessions in {folder}") from None
    root = AgentNode(folder / _pick(names, session_ref, "session", str(folder)))
    return find_agent(root, agent_ref) if agent_ref else root


def find_agent(node: AgentNode, rel: str) -> AgentNode:
    """The agent at ``rel`` below ``node``; every segment may be a unique prefix and may
    leave out ``sub-`` (``3f2a/9c`` finds ``sub-3f2a1b/sub-9c1d2e``)."""
    for part in [p for p in rel.strip("/").split("/") if p]:
        _check_part(part, rel)
        names = [child.name for child in node.children]
        name = _pick(names, part, "agent", node.id)
        node = next(child for child in node.children if child.name == name)
    return node


def load_tree(path: Path) -> AgentNode:
    return AgentNode(path)
