"""The live context: what the model is sent next, as opposed to the append-only log.

It is the head (system prompt, prior context, the task) followed by turns; a turn is one
assistant message with the tool results that answer it. Turns leave the live context in two
ways, both recorded as events in ``messages.jsonl`` so the context can be rebuilt:
``summarize`` (the model drops its oldest turns and keeps a summary) and the
``RLM_MAX_TURNS_IN_CONTEXT`` window (oldest turns drop out automatically).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from rlm.errors import ToolError

__all__ = [
    "EMPTY_REPLY",
    "LiveContext",
    "SummaryNote",
    "fill_empty_reply",
    "parse_arguments",
    "rebuild_context",
    "sanitize_tool_calls",
]

Message = dict[str, Any]


@dataclass
class SummaryNote:
    turns: tuple[int, int]
    """First and last absolute turn number (1-based) the summary replaces."""
    text: str


@dataclass
class _Turn:
    number: int
    messages: list[Message] = field(default_factory=list)


@dataclass
class Snapshot:
    """A copy of a :class:`LiveContext`'s lists (see ``LiveContext.snapshot``)."""

    head: list[Message]
    turns: list[_Turn]
    summaries: list[SummaryNote]
    auto_dropped: int
    count: int


class LiveContext:
    """Head + summaries + the turns still in context."""

    def __init__(self, head: list[Message], max_turns: int = -1) -> None:
        self.head = head
        self.max_turns = max_turns
        self.turns: list[_Turn] = []
        self.summaries: list[SummaryNote] = []
        self.auto_dropped = 0
        self._count = 0

    @property
    def turn_count(self) -> int:
        """Assistant turns so far, including dropped ones."""
        return self._count

    def add_assistant(self, message: Message) -> int:
        """Start a new turn; returns how many old turns the window dropped to make room."""
        self._count += 1
        self.turns.append(_Turn(self._count, [fill_empty_reply(message)]))
        dropped = 0
        if self.max_turns > 0:
            while len(self.turns) > self.max_turns:
                self.turns.pop(0)
                dropped += 1
        self.auto_dropped += dropped
        return dropped

    def add(self, message: Message) -> None:
        """A tool result or a nudge: part of the current turn (or of the head before any)."""
        if self.turns:
            self.turns[-1].messages.append(message)
        else:
            self.head.append(message)

    def add_user(self, message: Message) -> None:
        """A new user message (multi-turn sessions): it closes the turns so far into the head."""
        for turn in self.turns:
            self.head.extend(turn.messages)
        self.turns.clear()
        self.head.append(message)

    def summarize(self, num_turns: int, summary: str) -> SummaryNote:
        """Drop the ``num_turns`` oldest turns; the current turn (which asks) never goes."""
        droppable = len(self.turns) - 1
        if num_turns < 1 or num_turns > droppable:
            raise ToolError(
                f"cannot drop {num_turns} turns: {droppable} turn(s) can be dropped "
                "(the current turn stays); nothing changed"
            )
        gone, self.turns = self.turns[:num_turns], self.turns[num_turns:]
        note = SummaryNote((gone[0].number, gone[-1].number), summary)
        self.summaries.append(note)
        return note

    def summarize_replayed(self, num_turns: int, summary: str, turns: tuple[int, int]) -> None:
        """Apply a logged summarize again (the turn that asked for it is already gone from
        the head of the replay when the log was cut, so no check on the current turn)."""
        num_turns = min(num_turns, len(self.turns))
        self.turns = self.turns[num_turns:]
        self.summaries.append(SummaryNote(turns, summary))

    def snapshot(self) -> Snapshot:
        """The state to go back to if the next message is cancelled: lists are copied, the
        messages themselves are shared (they are never changed once added), so this costs
        one pointer per message instead of a deep copy of the conversation."""
        return Snapshot(
            head=list(self.head),
            turns=[_Turn(t.number, list(t.messages)) for t in self.turns],
            summaries=list(self.summaries),
            auto_dropped=self.auto_dropped,
            count=self._count,
        )

    def restore(self, snap: Snapshot) -> None:
        self.head = snap.head
        self.turns = snap.turns
        self.summaries = snap.summaries
        self.auto_dropped = snap.auto_dropped
        self._count = snap.count

    def status(self) -> str:
        """``[context turns: n/N]``, appended to tool results when a window is set."""
        return f"[context turns: {len(self.turns)}/{self.max_turns}]"

    def messages(self) -> list[Message]:
        """What the model receives next."""
        out = copy.copy(self.head)
        notes = [f"[turns {s.turns[0]}-{s.turns[1]}] {s.text}" for s in self.summaries]
        if self.auto_dropped:
            notes.append(
                f"[{self.auto_dropped} older turn(s) were dropped from your context "
                f"automatically; at most {self.max_turns} stay]"
            )
        if notes:
            out.append(
                {
                    "role": "user",
                    "content": "Summary of earlier turns, no longer in context:\n"
                    + "\n".join(notes),
                }
            )
        for turn in self.turns:
            out.extend(turn.messages)
        return out


#: What an empty assistant reply goes back as; the log keeps it empty.
EMPTY_REPLY = "(empty reply)"


def fill_empty_reply(message: Message) -> Message:
    """An assistant reply with neither text nor tool calls (answered by a nudge) goes back
    with placeholder text: strict chat templates and request validators refuse an assistant
    message that has neither."""
    content = message.get("content")
    if message.get("role") != "assistant" or message.get("tool_calls"):
        return message
    if isinstance(content, str) and content.strip():
        return message
    if content is not None and not isinstance(content, str):
        return message  # content parts: the server's business
    return {**message, "content": EMPTY_REPLY}


def rebuild_context(lines: list[dict[str, Any]], max_turns: int = -1) -> LiveContext:
    """Replay a ``messages.jsonl`` into the live context the model would be sent next.

    Message lines are replayed in order (``kind: "context"`` lines and the system prompt form
    the head, a user message without ``kind`` starts a new exchange, ``kind: "nudge"`` belongs
    to the current turn); ``summarize`` events drop turns again; a ``turn_cancelled`` or
    ``turn_failed`` event discards the ``discard_lines`` lines before it, as that turn was
    rolled back.
    """
    dropped: set[int] = set()
    for index, line in enumerate(lines):
        if line.get("event") in ("turn_cancelled", "turn_failed"):
            dropped.update(range(max(0, index - int(line.get("discard_lines", 0))), index + 1))
    context = LiveContext([], max_turns)
    for index, line in enumerate(lines):
        if index in dropped:
            continue
        if line.get("event") == "summarize":
            turns = line.get("turns")
            if not (isinstance(turns, list) and len(turns) == 2):
                continue  # not written by rlm (a hand-edited log): nothing to replay
            first, last = turns
            # turn numbers in the log are absolute; replay drops the same oldest turns
            context.summarize_replayed(last - first + 1, line.get("summary", ""), (first, last))
            continue
        role = line.get("role")
        if role is None:
            continue
        message = {k: v for k, v in line.items() if k in OPENAI_KEYS}
        kind = line.get("kind")
        if role == "system" or kind == "context":
            context.head.append(message)
        elif role == "assistant":
            context.add_assistant(sanitize_tool_calls(message))
        elif role == "user" and kind != "nudge":
            context.add_user(message)
        else:
            context.add(message)
    return context


#: The keys of a chat message the model API knows; the log adds ``timestamp``, ``usage``, ...
OPENAI_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def parse_arguments(raw: str) -> object:
    """A tool call's arguments, parsed leniently: servers that generate JSON with a grammar
    put raw newlines inside strings (multi-line code, the normal case), which strict JSON
    refuses. Raises ``json.JSONDecodeError`` when it is not JSON at all."""
    return json.loads(raw, strict=False)


def sanitize_tool_calls(message: Message) -> Message:
    """The assistant message as the live context may send it back: a tool call whose
    arguments are not JSON (cut by a token limit, or just broken) goes out with ``"{}"``,
    and arguments only lenient parsing accepts (raw newlines inside strings) go out as
    strict JSON. Servers that re-parse the history with a strict parser (llama.cpp, vLLM and
    SGLang templates) answer every later request with an error otherwise; the log keeps the
    raw text."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    fixed = []
    changed = False
    for call in calls:
        function = call.get("function") or {}
        raw = function.get("arguments") or "{}"
        try:
            json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            try:
                strict = json.dumps(parse_arguments(raw))
            except (json.JSONDecodeError, TypeError):
                strict = "{}"
            call = {**call, "function": {**function, "arguments": strict}}
            changed = True
        fixed.append(call)
    return {**message, "tool_calls": fixed} if changed else message
