"""Typed events: what happens in an agent tree, as it happens.

Every agent of a tree reports to the root's ``on_event`` callback, so one consumer sees
descendants at any depth; ``agent_id`` is the agent's path in the session tree
(``<session-id>/sub-1a2b/sub-3c4d``) and ``parent_id`` names its parent. A callback that
raises is logged and ignored: observing a run never breaks it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AgentFinished",
    "AgentStarted",
    "ChildSpawned",
    "Event",
    "EventCallback",
    "KernelRestarted",
    "ModelRequest",
    "ModelResponse",
    "ModelRetry",
    "ToolFinished",
    "ToolStarted",
    "emit_safely",
]

log = logging.getLogger("rlm.agent.events")


@dataclass(frozen=True)
class Event:
    agent_id: str
    """Path of the agent in the session tree; the root's is the session id."""
    depth: int
    """0 for the root agent, 1 for its children, ..."""
    time: float = field(default_factory=time.time, kw_only=True)
    """Unix time the event happened."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class AgentStarted(Event):
    parent_id: str | None
    session_path: str
    task: str


@dataclass(frozen=True)
class AgentFinished(Event):
    status: str
    """done, error or cancelled."""
    stop_reason: str
    turns: int
    prompt_tokens: int
    completion_tokens: int
    elapsed: float


@dataclass(frozen=True)
class ModelRequest(Event):
    turn: int
    messages: int
    """How many messages the request carries."""


@dataclass(frozen=True)
class ModelResponse(Event):
    turn: int
    prompt_tokens: int | None
    """None: the endpoint did not report it (or reported garbage)."""
    completion_tokens: int | None
    latency: float
    tool_calls: int


@dataclass(frozen=True)
class ModelRetry(Event):
    attempt: int
    """The attempt about to be made: 2 for the first retry."""
    attempts: int
    """Attempts allowed in all (``RLM_RETRY_ATTEMPTS``)."""
    wait: float
    """Seconds until that attempt."""
    reason: str
    """What went wrong, short: ``connection refused``, ``HTTP 503``, ``malformed reply``."""


@dataclass(frozen=True)
class ToolStarted(Event):
    turn: int
    name: str
    preview: str
    """The first line of the call's main argument (code, command, path)."""


@dataclass(frozen=True)
class ToolFinished(Event):
    turn: int
    name: str
    duration: float
    preview: str
    """The first 200 characters of the result."""
    error: bool


@dataclass(frozen=True)
class ChildSpawned(Event):
    child_id: str
    task: str


@dataclass(frozen=True)
class KernelRestarted(Event):
    reason: str
    """died, restarted (timeout), flush_repl_state or resume."""


EventCallback = Callable[[Event], Any]


def emit_safely(callback: EventCallback | None, event: Event) -> None:
    if callback is None:
        return
    try:
        callback(event)
    except Exception:
        log.warning("on_event callback failed on %s; ignored", event.kind, exc_info=True)
