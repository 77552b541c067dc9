"""What rlm takes from a chat-completion reply, validated from the raw JSON.

Endpoints differ (vLLM, llama.cpp, Ollama, gateways) and some answer 200 with something that
is not a completion at all. Rather than trusting the SDK's lenient objects (which let
``message: null`` or a tool call without ``function`` through as ``None`` and crash later),
the body is checked against a small pydantic model of only the fields rlm needs. Common
variants are accepted and normalised: ``arguments`` as a JSON object (dumped to a string),
``content`` as a list of text parts (joined), a tool call without an id (one is assigned).
Everything else raises :class:`MalformedReply` with one line that says what is wrong.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

__all__ = ["MalformedReply", "ModelReply", "Usage", "json_object", "parse_reply"]

#: A token count above this is not a count but garbage; it is recorded as unknown.
MAX_TOKEN_COUNT = 1_000_000_000

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_missing_ids = itertools.count(1)


class MalformedReply(Exception):
    """A 2xx body that is not a usable chat completion; retried like a flaky gateway."""


@dataclass
class Usage:
    """Token counts as reported by the endpoint; ``None`` means the endpoint did not say.

    Unknown is not zero: a reply without ``usage`` (or with a negative, absurd or non-integer
    count) is logged as ``null``. Sums treat unknown as 0, so budgets and totals stay
    numbers (a lower bound when some replies were silent).
    """

    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            (self.prompt_tokens or 0) + (other.prompt_tokens or 0),
            (self.completion_tokens or 0) + (other.completion_tokens or 0),
        )

    def as_dict(self) -> dict[str, int | None]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    @property
    def known(self) -> bool:
        return self.prompt_tokens is not None and self.completion_tokens is not None

    @classmethod
    def unknown(cls) -> Usage:
        return cls(None, None)

    @classmethod
    def parse(cls, raw: Any) -> Usage:
        """Tolerant reading of a ``usage`` object: anything unusable becomes unknown."""
        if not isinstance(raw, dict):
            return cls.unknown()
        return cls(_count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens")))


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)
    return number if 0 <= number <= MAX_TOKEN_COUNT else None


@dataclass
class ModelReply:
    """One assistant message as the log and the next request need it, plus its metadata."""

    message: dict[str, Any]
    usage: Usage
    latency: float
    finish_reason: str | None = None
    """Why the endpoint stopped: ``stop``, ``tool_calls``, ``length``, ... (None: not said)."""
    model: str | None = None
    """The model the endpoint says it served (may differ from the one asked for)."""
    id: str | None = None
    """The response id, for matching a log line with the endpoint's own logs."""
    notes: list[str] = field(default_factory=list)
    """Things rlm changed in the reply, e.g. a tool call of a type it cannot run."""


# -- the schema: only what rlm reads -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Function(_Strict):
    name: str
    arguments: str = "{}"

    @field_validator("arguments", mode="before")
    @classmethod
    def _dump_objects(cls, value: Any) -> Any:
        # Ollama and some gateways send the arguments as a JSON object, not a string.
        if isinstance(value, (dict, list)):
            return json.dumps(value, ensure_ascii=False)
        return "{}" if value is None else value


class _ToolCall(_Strict):
    id: str | None = None
    type: str = "function"
    function: _Function | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _default_type(cls, value: Any) -> Any:
        return "function" if value is None else value


class _Message(_Strict):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif not isinstance(part, dict):
                raise ValueError("content parts must be objects or strings")
        return "".join(texts)


class _Choice(_Strict):
    message: _Message
    finish_reason: str | None = None


class _Completion(_Strict):
    choices: list[_Choice]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def json_object(data: bytes) -> dict[str, Any]:
    """``data`` parsed as one JSON object (a whole reply, or one chunk of a streamed one), or
    :class:`MalformedReply` saying why not."""
    try:
        raw = json.loads(data)
    except UnicodeDecodeError:
        raise MalformedReply("the reply is not valid UTF-8") from None
    except RecursionError:
        raise MalformedReply("the reply is nested too deeply to parse") from None
    except ValueError:
        raise MalformedReply("the reply is not JSON") from None
    if not isinstance(raw, dict):
        raise MalformedReply(f"the reply is a JSON {type(raw).__name__}, not an object")
    return raw


def parse_reply(data: bytes, latency: float) -> ModelReply:
    """The reply in ``data`` (a raw 2xx body), or :class:`MalformedReply` saying what is wrong."""
    raw = json_object(data)
    if not raw.get("choices"):
        error = raw.get("error")
        if error is not None:
            text = error.get("message") if isinstance(error, dict) else error
            raise MalformedReply(f"the endpoint answered with an error: {str(text)[:500]}")
        if isinstance(raw.get("choices"), list) or "choices" not in raw:
            raise MalformedReply("the reply had no choices")
    try:
        completion = _Completion.model_validate(raw)
    except ValidationError as exc:
        raise MalformedReply(_first_error(exc)) from None
    except RecursionError:
        raise MalformedReply("the reply is nested too deeply to validate") from None
    choice = completion.choices[0]
    message: dict[str, Any] = {"role": "assistant", "content": choice.message.content}
    notes: list[str] = []
    calls = []
    for call in choice.message.tool_calls or []:
        call_id = call.id or f"call_rlm_{next(_missing_ids)}"
        if call.type != "function" or call.function is None:
            if call.type == "function":
                raise MalformedReply(f"the reply has a tool call without a function ({call_id})")
            # Not dropped: answered as an unknown tool, so the model hears about it.
            name = call.type if _NAME.match(call.type) else "unsupported"
            notes.append(f"tool call {call_id} has unsupported type {call.type[:40]!r}")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": "{}"},
                }
            )
            continue
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
        )
    if calls:
        message["tool_calls"] = calls
        if message["content"] is None:
            # Strict servers reject null content next to tool calls in the next request; the
            # log records the message as it will be sent, so "" from the start.
            message["content"] = ""
    return ModelReply(
        message,
        Usage.parse(raw.get("usage")),
        latency,
        finish_reason=choice.finish_reason,
        model=_text(raw.get("model")),
        id=_text(raw.get("id")),
        notes=notes,
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the reply"
    message = error["msg"].removeprefix("Value error, ")
    return f"the reply is not a usable chat completion ({where}: {message})"
