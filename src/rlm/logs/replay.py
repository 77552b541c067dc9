"""Making sense of one agent's ``messages.jsonl``: tool calls with their results, which call
spawned which sub-agent, and the live context the model saw (rebuilt with
:func:`rlm.agent.context.rebuild_context`, which ``--resume`` uses too)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rlm.agent.context import OPENAI_KEYS, rebuild_context
from rlm.logs.store import AgentNode, parse_time
from rlm.schema.meta import AgentMeta

__all__ = [
    "OPENAI_KEYS",
    "Call",
    "ContextReplay",
    "Transcript",
    "clean_message",
    "discarded_lines",
    "last_request",
    "transcript",
]


def clean_message(record: dict[str, Any]) -> dict[str, Any]:
    """A log line as the message sent to the model (without ``timestamp``, ``usage``)."""
    return {key: value for key, value in record.items() if key in OPENAI_KEYS}


@dataclass
class Call:
    """One tool call of an assistant message and what answered it."""

    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None
    """The parsed arguments (``None`` when the model sent invalid JSON)."""
    turn: int
    asked_at: datetime | None
    result: str | None = None
    """The tool message's content; ``None`` while the call runs (or if the run was killed)."""
    answered_at: datetime | None = None
    outputs: list[dict[str, Any]] | None = None
    """The ipython cell's structured outputs (``msg_type`` + ``content`` each) when the log
    has them; ``None`` in logs written before they were kept."""
    children: list[AgentNode] = field(default_factory=list)
    """Sub-agents started while this call ran (ipython cells calling ``rlm.run``)."""

    @property
    def code(self) -> str:
        """The code of an ipython call, the command of a bash call, else ``""``."""
        args = self.arguments or {}
        for key in ("code", "command"):
            if isinstance(args.get(key), str):
                return args[key]
        return ""


@dataclass
class Transcript:
    records: list[dict[str, Any]]
    calls: list[Call]
    by_line: dict[int, list[Call]]
    """Index of an assistant line -> its calls; index of a tool line -> the call it answers."""
    turn_of_line: dict[int, int]
    """Index of an assistant line -> its turn number (1-based, as the agent counts: turns of
    a cancelled exchange are counted again). Prior-context lines have none."""
    unmatched_children: list[AgentNode]


def _parse_arguments(raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def transcript(node: AgentNode) -> Transcript:
    """Pair tool calls with their results and sub-agents with the calls that spawned them."""
    records = node.log.records
    calls: list[Call] = []
    by_line: dict[int, list[Call]] = {}
    turn_of_line: dict[int, int] = {}
    pending: dict[str, Call] = {}
    turn = 0
    for index, record in enumerate(records):
        role = record.get("role")
        if record.get("event") in ("turn_cancelled", "turn_failed"):
            # the agent rolled its context back, turn numbers included
            count = record.get("discard_lines")
            if isinstance(count, int) and count > 0:
                turn -= sum(1 for i in range(max(0, index - count), index) if i in turn_of_line)
        elif role == "assistant" and record.get("kind") != "context":
            turn += 1
            turn_of_line[index] = turn
            pending = {}
            mine = []
            for tool_call in record.get("tool_calls") or []:
                function = tool_call.get("function") or {}
                raw = function.get("arguments")
                call = Call(
                    id=str(tool_call.get("id") or ""),
                    name=str(function.get("name") or "?"),
                    raw_arguments=raw if isinstance(raw, str) else json.dumps(raw),
                    arguments=_parse_arguments(raw),
                    turn=turn,
                    asked_at=parse_time(record.get("timestamp")),
                )
                mine.append(call)
                pending.setdefault(call.id, call)
            calls.extend(mine)
            by_line[index] = mine
        elif role == "tool":
            answered = pending.pop(str(record.get("tool_call_id") or ""), None)
            if answered is not None:
                content = record.get("content")
                answered.result = content if isinstance(content, str) else json.dumps(content)
                outputs = record.get("outputs")
                if isinstance(outputs, list):
                    answered.outputs = [o for o in outputs if isinstance(o, dict)]
                answered.answered_at = parse_time(record.get("timestamp"))
                by_line[index] = [answered]
    unmatched = _attach_children(calls, node.children)
    return Transcript(records, calls, by_line, turn_of_line, unmatched)


def _attach_children(calls: list[Call], children: list[AgentNode]) -> list[AgentNode]:
    """Give every child to the call that was running when it started.

    Calls of one assistant message run one after the other, so call *i* runs from the
    previous call's result (or the assistant message) to its own result; a call without a
    result (still running, or killed) runs until the end. A child whose start time is unknown
    or falls in no window goes to the ``rlm.run(`` calls in order."""
    windows: list[tuple[Call, datetime | None, datetime | None]] = []
    previous: Call | None = None
    for call in calls:
        start = call.asked_at
        if previous is not None and previous.turn == call.turn and previous.answered_at:
            start = previous.answered_at
        windows.append((call, start, call.answered_at))
        previous = call
    left: list[AgentNode] = []
    for child in children:
        started = child.started
        home = None
        if started is not None:
            for call, start, end in windows:
                if (start is None or start <= started) and (end is None or started <= end):
                    home = call
                    break
        if home is None:
            left.append(child)
        else:
            home.children.append(child)
    spawners = [c for c in calls if "rlm.run(" in c.code]
    unmatched: list[AgentNode] = []
    for child in left:
        # The latest spawning call that started before the child did, else the first one
        # that has spawned fewer children than it has ``rlm.run(`` calls.
        started = child.started
        fits = [c for c in spawners if started and c.asked_at and c.asked_at <= started]
        if fits:
            fits[-1].children.append(child)
            continue
        free = [c for c in spawners if len(c.children) < c.code.count("rlm.run(")]
        if free:
            free[0].children.append(child)
        else:
            unmatched.append(child)
    return unmatched


def discarded_lines(records: list[dict[str, Any]]) -> set[int]:
    """Indexes of lines a ``turn_cancelled`` or ``turn_failed`` event took back out of the
    live context."""
    gone: set[int] = set()
    for index, record in enumerate(records):
        if record.get("event") in ("turn_cancelled", "turn_failed"):
            count = record.get("discard_lines")
            if isinstance(count, int) and count > 0:
                gone.update(range(max(0, index - count), index + 1))
    return gone


@dataclass
class ContextReplay:
    last_request: list[dict[str, Any]] | None
    """What the model was sent in the agent's last request (``None``: no request logged)."""
    last_reply: dict[str, Any] | None
    """The assistant message answering it."""


def _replayable(record: dict[str, Any]) -> bool:
    """Leave out what :func:`rlm.agent.context.rebuild_context` cannot take (a summarize event
    without its two turn numbers, from a damaged log)."""
    if record.get("event") != "summarize":
        return True
    turns = record.get("turns")
    return (
        isinstance(turns, (list, tuple))
        and len(turns) == 2
        and all(isinstance(t, int) for t in turns)
    )


def last_request(records: list[dict[str, Any]], meta: AgentMeta | dict[str, Any]) -> ContextReplay:
    """The live context of the agent's last model request, and the reply to it.

    The log up to the last assistant message that a ``turn_cancelled`` event did not take
    back is replayed with :func:`rlm.agent.context.rebuild_context`, the function ``--resume``
    uses: the head (system prompt, ``kind: "context"`` lines, the task), turns, summaries
    and the ``max_turns_in_context`` window from the logged settings."""
    gone = discarded_lines(records)
    assistants = [
        i for i, r in enumerate(records) if r.get("role") == "assistant" and i not in gone
    ]
    if not assistants:
        return ContextReplay(None, None)
    last = assistants[-1]
    if not isinstance(meta, AgentMeta):
        meta = AgentMeta.model_validate(meta)
    window = meta.settings.get("max_turns_in_context", -1)
    context = rebuild_context(
        [r for r in records[:last] if _replayable(r)], window if isinstance(window, int) else -1
    )
    return ContextReplay(
        [clean_message(m) for m in context.messages()], clean_message(records[last])
    )
