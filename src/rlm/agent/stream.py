"""A streamed chat completion (server-sent events) put back together as one reply body.

rlm asks for ``stream=True`` so the user sees the model's text as it is written
(:class:`rlm.agent.events.ModelDelta`). The chunks are assembled here into the JSON body a
non-streamed request would have got, and that body goes through the same validation
(:func:`rlm.agent.reply.parse_reply`): streaming changes when the text is seen, never what
is accepted. A chunk that is not JSON, an error object in the stream, or a delta of the wrong
type raises :class:`MalformedReply` like a broken non-streamed body would.

Variants accepted, as endpoints send them: ``reasoning_content`` or ``reasoning`` text
(llama.cpp, vLLM, DeepSeek), ``content`` as a list of text parts, tool-call ``arguments`` as
a JSON object (Ollama), a tool call without ``index`` (one index per new ``id``), usage in the
last chunk (``stream_options.include_usage``) or in every chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Any

from rlm.agent.reply import MalformedReply, json_object

__all__ = ["DeltaKind", "OnDelta", "StreamAssembler"]


class DeltaKind(str, Enum):
    """What a piece of streamed text is."""

    TEXT = "text"
    """The reply's content: what the user reads."""
    REASONING = "reasoning"
    """``reasoning_content``: the model thinking aloud, shown dimmed."""
    TOOL_CALL = "tool_call"
    """A tool call's arguments as they are written (code, a command)."""


#: ``on_delta(kind, text)``: called for every non-empty piece of text as it arrives.
OnDelta = Callable[[DeltaKind, str], Any]


class _Call:
    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name = ""
        self.arguments = ""
        self.object_arguments: Any = None


class StreamAssembler:
    """Feed it the raw bytes of an SSE body; :meth:`body` gives the assembled completion."""

    def __init__(self, on_delta: OnDelta | None = None) -> None:
        self._on_delta = on_delta
        self._pending: list[bytes] = []  # the start of a line whose end has not come yet
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: Any = None
        self._id: Any = None
        self._model: Any = None
        self._chunks = 0
        self._choices = False
        self.done = False
        """The stream said ``data: [DONE]``."""

    def feed(self, data: bytes) -> None:
        if b"\n" not in data:  # kept in pieces: a long line is joined once, not per chunk
            self._pending.append(data)
            return
        first, *lines, rest = data.split(b"\n")
        self._line(b"".join([*self._pending, first]).rstrip(b"\r"))
        self._pending = [rest] if rest else []
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def body(self) -> bytes:
        """The completion as one JSON body (what ``stream=False`` would have returned)."""
        rest = b"".join(self._pending)
        self._pending = []
        if rest.strip():
            self._line(rest.rstrip(b"\r"))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self._content) if self._content or not self._calls else None,
        }
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if self._calls:
            message["tool_calls"] = [self._call(self._calls[i]) for i in sorted(self._calls)]
        completion: dict[str, Any] = {
            "choices": [{"message": message, "finish_reason": self._finish_reason}]
            if self._choices
            else [],
            "usage": self._usage,
        }
        if self._id is not None:
            completion["id"] = self._id
        if self._model is not None:
            completion["model"] = self._model
        return json.dumps(completion).encode()

    # -- one line, one chunk -------------------------------------------------------------------

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return  # blank separator, ``: comment``, ``event:``, ``id:``, ``retry:``
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        if not payload:
            return
        self._chunk(json_object(payload))

    def _chunk(self, chunk: dict[str, Any]) -> None:
        self._chunks += 1
        error = chunk.get("error")
        if error is not None and not chunk.get("choices"):
            text = error.get("message") if isinstance(error, dict) else error
            raise MalformedReply(f"the endpoint answered with an error: {str(text)[:500]}")
        if self._id is None and isinstance(chunk.get("id"), str):
            self._id = chunk["id"]
        if self._model is None and isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is None:
            return
        if not isinstance(choices, list):
            raise _unusable("choices", "should be a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise _unusable("choices.0", "should be an object")
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never asked for; keep the first choice only
            self._choices = True
            self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self._finish_reason = reason
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")  # a server that sends the whole message at the end
        if delta is None:
            return
        if not isinstance(delta, dict):
            raise _unusable("choices.0.delta", "should be an object")
        self._text(delta.get("content"), self._content, DeltaKind.TEXT, "content")
        for key in ("reasoning_content", "reasoning"):
            self._text(delta.get(key), self._reasoning, DeltaKind.REASONING, key)
        calls = delta.get("tool_calls")
        if calls is None:
            return
        if not isinstance(calls, list):
            raise _unusable("choices.0.delta.tool_calls", "should be a list")
        for call in calls:
            if not isinstance(call, dict):
                raise _unusable("choices.0.delta.tool_calls.0", "should be an object")
            self._tool_call(call)

    def _text(self, value: Any, into: list[str], kind: DeltaKind, where: str) -> None:
        if value is None:
            return
        if isinstance(value, list):  # text parts
            parts = [p if isinstance(p, str) else p.get("text") for p in value if p is not None]
            if not all(isinstance(p, (str, type(None))) for p in parts):
                raise _unusable(f"choices.0.delta.{where}", "text parts must be text")
            value = "".join(p for p in parts if p)
        if not isinstance(value, str):
            raise _unusable(f"choices.0.delta.{where}", "should be a string")
        if value:
            into.append(value)
            self._say(kind, value)

    def _tool_call(self, raw: dict[str, Any]) -> None:
        index = raw.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            # No index: a new id starts a new call, anything else continues the last one.
            index = len(self._calls) if raw.get("id") or not self._calls else max(self._calls)
        call = self._calls.setdefault(index, _Call())
        if isinstance(raw.get("id"), str) and raw["id"]:
            call.id = raw["id"]
        if raw.get("type") is not None:
            call.type = raw["type"]
        function = raw.get("function")
        if function is None:
            return
        if not isinstance(function, dict):
            raise _unusable("choices.0.delta.tool_calls.0.function", "should be an object")
        name = function.get("name")
        if isinstance(name, str) and name and name != call.name:
            call.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
            if arguments:
                self._say(DeltaKind.TOOL_CALL, arguments)
        elif arguments is not None:
            call.object_arguments = arguments  # validated (and dumped) by parse_reply

    @staticmethod
    def _call(call: _Call) -> dict[str, Any]:
        arguments = call.object_arguments if call.object_arguments is not None else call.arguments
        out: dict[str, Any] = {"type": call.type or "function"}
        if call.id is not None:
            out["id"] = call.id
        if call.name or arguments:
            out["function"] = {"name": call.name, "arguments": arguments or "{}"}
        return out

    def _say(self, kind: DeltaKind, text: str) -> None:
        if self._on_delta is not None:
            self._on_delta(kind, text)


def _unusable(where: str, what: str) -> MalformedReply:
    return MalformedReply(f"the reply is not a usable chat completion ({where}: {what})")
