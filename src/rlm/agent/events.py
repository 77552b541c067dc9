"""Typed events: what happens in an agent tree, as it happens.

Every agent of a tree reports to the root's ``on_event`` callback, so one consumer sees
descendants at any depth; ``agent_id`` is the agent's path in the session tree
(``<session-id>/sub-1a2b/sub-3c4d``) and ``parent_id`` names its parent. A callback that
raises is logged and ignored: observing a run never breaks it.

Events are frozen pydantic models, so their fields are checked where they are made and
``rlm --events`` prints lines of a documented schema: ``{"event": <class name>, **fields}``
(:meth:`Event.as_dict`), described for machines by :func:`events_json_schema`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rlm.agent.stream import DeltaKind
from rlm.schema import Status, StopReason

__all__ = [
    "AgentFinished",
    "AgentStarted",
    "ChildSpawned",
    "EndpointWarning",
    "Event",
    "EventCallback",
    "HostFunctionFinished",
    "KernelRestarted",
    "LlmCallFinished",
    "ModelDelta",
    "ModelRequest",
    "ModelResponse",
    "ModelRetry",
    "ToolFinished",
    "ToolStarted",
    "emit_safely",
    "events_json_schema",
]

log = logging.getLogger("rlm.agent.events")


class Event(BaseModel):
    """What every event has. Subclasses add their own fields; none may be left out."""

    # defer_build: a class's validator is built when its first event is, not at import (most
    # kinds never happen in a run; building them all cost ~10 ms of every start).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    agent_id: str
    """Path of the agent in the session tree; the root's is the session id."""
    depth: int
    """0 for the root agent, 1 for its children, ..."""
    time: float = Field(default_factory=time.time)
    """Unix time the event happened."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``--events`` prints: ``event`` (the class name), then the fields."""
        return {"event": self.kind, **self.model_dump(mode="json")}


class AgentStarted(Event):
    parent_id: str | None
    session_path: str
    task: str


class AgentFinished(Event):
    status: Status
    """done, error or cancelled."""
    stop_reason: StopReason | str = Field(union_mode="left_to_right")
    """A :class:`StopReason` (kept as text if the agent reports one this version lacks)."""
    turns: int
    prompt_tokens: int
    completion_tokens: int
    elapsed: float


class ModelRequest(Event):
    turn: int
    messages: int
    """How many messages the request carries."""


class ModelDelta(Event):
    """A piece of the reply as the model writes it (streamed). Put together, the ``text``
    pieces of one ``part`` make that part of the reply; a retried request streams again from
    the start (a :class:`ModelRetry` comes first)."""

    turn: int
    part: DeltaKind
    """``text`` (the reply), ``reasoning`` (``reasoning_content``, thinking aloud) or
    ``tool_call`` (a tool call's arguments as they are written)."""
    text: str


class ModelResponse(Event):
    turn: int
    prompt_tokens: int | None
    """None: the endpoint did not report it (or reported garbage)."""
    completion_tokens: int | None
    latency: float
    tool_calls: int
    content: str = Field("", exclude=True)
    """The reply's text, for in-process observers (``rlm --acp``); not in ``--events``."""
    cost: float = 0.0
    """Dollars of this call, priced with ``RLM_PRICES`` (0 when the model has no price)."""


class ModelRetry(Event):
    attempt: int
    """The attempt about to be made: 2 for the first retry."""
    attempts: int
    """Attempts allowed in all (``RLM_RETRY_ATTEMPTS``)."""
    wait: float
    """Seconds until that attempt."""
    reason: str
    """What went wrong, short: ``connection refused``, ``HTTP 503``, ``malformed reply``."""


class ToolStarted(Event):
    turn: int
    name: str
    preview: str
    """The first line of the call's main argument (code, command, path)."""
    call_id: str = Field("", exclude=True)
    """The model's id of the call; this field and ``arguments`` are for in-process
    observers (``rlm --acp``), not in ``--events``."""
    arguments: str = Field("", exclude=True)
    """The call's arguments as the model wrote them (JSON text)."""


class ToolFinished(Event):
    turn: int
    name: str
    duration: float
    preview: str
    """The first 200 characters of the result."""
    error: bool
    call_id: str = Field("", exclude=True)
    """The model's id of the call (in-process observers only, as ``output``)."""
    output: str = Field("", exclude=True)
    """The whole result the model gets (in-process observers only: not in ``--events``)."""


class EndpointWarning(Event):
    """Something the user should know about the endpoint, said once per run (e.g. tool calls
    written as text, a token budget without usage counts)."""

    message: str


class TurnFinished(Event):
    """The agent answered one message (or failed or was cancelled on it) and waits for the
    next: a child of ``rlm.spawn`` or the root of a ``Session`` is idle until then."""

    status: Status


class ChildSpawned(Event):
    child_id: str
    task: str


class KernelRestarted(Event):
    reason: str
    """died, restarted (timeout), flush_repl_state or resume."""


class LlmCallFinished(Event):
    """An ``rlm.llm`` call of the agent's cells ended (answered, failed or cancelled)."""

    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float
    error: str | None


class HostFunctionFinished(Event):
    """A host function called from the agent's cells returned or failed."""

    name: str
    duration: float
    error: str | None


#: Every event class, in the order an agent's life emits them.
EVENT_TYPES: tuple[type[Event], ...] = (
    AgentStarted,
    ModelRequest,
    ModelDelta,
    ModelRetry,
    ModelResponse,
    ToolStarted,
    ToolFinished,
    ChildSpawned,
    LlmCallFinished,
    HostFunctionFinished,
    KernelRestarted,
    EndpointWarning,
    TurnFinished,
    AgentFinished,
)


def events_json_schema() -> dict[str, Any]:
    """JSON Schema of one ``--events`` line: one of the event objects, told apart by
    ``event``."""
    variants, defs = [], {}
    for cls in EVENT_TYPES:
        schema = cls.model_json_schema(mode="serialization")
        defs.update(schema.pop("$defs", {}))  # the enums, referenced as #/$defs/<name>
        schema["properties"] = {"event": {"const": cls.__name__}, **schema["properties"]}
        schema["required"] = ["event", *schema.get("required", [])]
        variants.append(schema)
    return {"title": "rlm event", "oneOf": variants, "$defs": defs}


EventCallback = Callable[[Event], Any]


def emit_safely(callback: EventCallback | None, event: Event) -> None:
    if callback is None:
        return
    try:
        callback(event)
    except Exception:
        log.warning("on_event callback failed on %s; ignored", event.kind, exc_info=True)
