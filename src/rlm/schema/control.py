"""The content of control-channel messages, and the one codec for errors that cross it.

The channel (:mod:`rlm.control.channel`) signs and routes; these models say what a message
holds. A kernel is not trusted: the orchestrator validates every request with
:meth:`ControlMessage.parse`, and a request that does not fit gets an error reply naming the
field, never a crash. Keys a model does not know are ignored (a kernel cannot smuggle
settings such as ``max_depth`` in). Every content also carries ``buffer_sha256``, added and
checked by the channel itself.

Messages::

    run_request     {task, inputs: [{name, type, size}], model?, max_turns?, tools?, cell?}
    run_reply       {status: "ok", answer, session_path}     or an error reply
    inputs_request  {names?}
    inputs_reply    {status: "ok", inputs: [{name, type, size}]}   or an error reply
    llm_request     {prompt: str | [message], system?, model?, max_tokens?, json_mode, cell?}
    llm_reply       {status: "ok", answer, usage: {prompt_tokens, completion_tokens}}
                                                              or an error reply
    function_request {name, args: [json], keywords: {json}, cell?}
    function_reply  {status: "ok", result: json}             or an error reply
    spawn_request   {task?, inputs, model?, max_turns?, tools?, cell?}
    spawn_reply     {status: "ok", child, session_path, answer?}  or an error reply
    send_request    {child, message, cell?}
    send_reply      {status: "ok", answer}                    or an error reply
    close_request   {child}
    close_reply     {status: "ok"}                            or an error reply
    cancel_request  {request_id}                              (no reply)
    error reply     {status: "error", error_type, message, reason?, session_path?}

Errors travel as an error reply made by :func:`encode_error` on the orchestrator side and
turned back into the same :class:`~rlm.errors.RLMError` subclass by :func:`decode_error` on
the kernel side, so ``except rlm.AgentError as e: e.reason`` works inside a cell.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import rlm.errors as errors
from rlm.errors import AgentError, ConfigError, RLMError
from rlm.schema import StopReason

__all__ = [
    "CancelRequest",
    "CloseReply",
    "CloseRequest",
    "ControlMessage",
    "ErrorReply",
    "FunctionReply",
    "FunctionRequest",
    "InputInfo",
    "InputsReply",
    "InputsRequest",
    "LlmReply",
    "LlmRequest",
    "RunReply",
    "RunRequest",
    "SendReply",
    "SendRequest",
    "SpawnReply",
    "SpawnRequest",
    "decode_error",
    "encode_error",
]


class ControlMessage(BaseModel):
    """Base of every message content: unknown keys are ignored."""

    # defer_build: each message's validator is built at its first use, not when the
    # orchestrator or a kernel imports this module (most kinds are rare).
    model_config = ConfigDict(extra="ignore", defer_build=True)

    @classmethod
    def parse(cls, content: Any, what: str) -> Any:
        """The validated content, or a :class:`ConfigError` of one line naming the bad
        fields (what a kernel's malformed request is answered with)."""
        try:
            return cls.model_validate(content)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'content'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"malformed {what}: {problems}") from None

    def content(self) -> dict[str, Any]:
        """The dict the channel sends."""
        return self.model_dump(mode="json")


class InputInfo(ControlMessage):
    """One input variable of an agent: how its prompt describes it (the value travels as a
    pickled buffer, in the same order as the list)."""

    name: str
    type: str = ""
    size: str = ""

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"{value!r} is not a valid Python variable name")
        return value


class RunRequest(ControlMessage):
    """``rlm.run(...)`` from a cell: start a sub-agent of the calling agent."""

    task: str
    inputs: list[InputInfo] = []
    model: str | None = None
    max_turns: int | None = None
    tools: str | list[str] | None = None
    """Tool names, comma-separated (``rlm.inkernel.run`` joins a list) or a list."""
    cell: str | None = None
    """The msg_id of the cell that made the request: refused unless that cell is running
    (a sub-agent never outlives the cell that starts it)."""


class RunReply(ControlMessage):
    status: Literal["ok"] = "ok"
    answer: str
    session_path: str


class InputsRequest(ControlMessage):
    """A kernel asks for its agent's inputs (``rlm.inkernel.load_inputs``)."""

    names: list[str] | None = None
    """Only these inputs (None: all), so loading one new message does not send every
    earlier input again."""


class InputsReply(ControlMessage):
    status: Literal["ok"] = "ok"
    inputs: list[InputInfo] = []


#: Characters of one ``rlm.llm`` prompt at most (all messages together): a runaway cell
#: must not push gigabytes through the orchestrator into a request body.
MAX_LLM_PROMPT = 10_000_000


class LlmRequest(ControlMessage):
    """``rlm.llm(...)`` from a cell: one model request, no tools, no kernel."""

    prompt: str | list[dict[str, Any]]
    """The user text, or a whole list of chat messages (``role`` + ``content``)."""
    system: str | None = None
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    json_mode: bool = False
    """Ask the endpoint for a JSON object (``response_format: json_object``)."""
    cell: str | None = None
    """The cell that made the request: refused unless that cell is running (as ``run``)."""

    @field_validator("prompt")
    @classmethod
    def _messages(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty message list")
            for message in value:
                if message.get("role") not in ("system", "user", "assistant"):
                    raise ValueError("each message needs a role of system, user or assistant")
                if not isinstance(message.get("content"), str):
                    raise ValueError("each message needs a text content")
        size = len(value) if isinstance(value, str) else sum(len(m["content"]) for m in value)
        if size > MAX_LLM_PROMPT:
            raise ValueError(f"the prompt is longer than {MAX_LLM_PROMPT:,} characters")
        return value

    def messages(self) -> list[dict[str, Any]]:
        """The chat messages sent to the model: ``system`` first, then the prompt."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        if isinstance(self.prompt, str):
            return [*head, {"role": "user", "content": self.prompt}]
        return [*head, *({"role": m["role"], "content": m["content"]} for m in self.prompt)]


class LlmReply(ControlMessage):
    status: Literal["ok"] = "ok"
    answer: str
    usage: dict[str, int | None] = {}


class FunctionRequest(ControlMessage):
    """A host function called from a cell (``await name(...)``): run it in the orchestrator."""

    name: str
    args: list[Any] = []
    keywords: dict[str, Any] = {}
    """The keyword arguments."""
    cell: str | None = None
    """The cell that made the request: refused unless that cell is running (as ``run``)."""


class FunctionReply(ControlMessage):
    status: Literal["ok"] = "ok"
    result: Any = None


class SpawnRequest(ControlMessage):
    """``rlm.spawn(...)`` from a cell: a persistent sub-agent of the calling agent. Its
    options are ``rlm.run``'s; ``task``, when given, is its first turn, run before the reply."""

    task: str | None = None
    inputs: list[InputInfo] = []
    model: str | None = None
    max_turns: int | None = None
    tools: str | list[str] | None = None
    cell: str | None = None
    """The cell that made the request: refused unless that cell is running. The child it
    starts is not bound to that cell (it lives until closed or until its parent ends)."""


class SpawnReply(ControlMessage):
    status: Literal["ok"] = "ok"
    child: str
    """The child's folder name (``sub-1a2b3c``): its handle in later requests."""
    session_path: str
    answer: str | None = None
    """The answer to ``task`` (None without one)."""


class SendRequest(ControlMessage):
    """``await child.send(message)``: one turn of a spawned child."""

    child: str
    message: str
    cell: str | None = None
    """The cell that made the request: a turn belongs to its cell, like ``rlm.run``."""


class SendReply(ControlMessage):
    status: Literal["ok"] = "ok"
    answer: str


class CloseRequest(ControlMessage):
    """``await child.close()``: end a spawned child (its kernel shuts down)."""

    child: str


class CloseReply(ControlMessage):
    status: Literal["ok"] = "ok"


class CancelRequest(ControlMessage):
    """The cell waiting for ``request_id`` was interrupted: cancel that request."""

    request_id: str


class ErrorReply(ControlMessage):
    """Any request that failed. ``reason`` and ``session_path`` are set for an
    :class:`~rlm.errors.AgentError` (the sub-agent's stop reason and folder)."""

    status: Literal["error"] = "error"
    error_type: str = "RLMError"
    """The class name of the error in :mod:`rlm.errors` (or ``CancelledError``)."""
    message: str = "the request failed"
    reason: StopReason | str | None = None
    session_path: str | None = None


#: The error classes a reply may name; anything else decodes as ``RLMError``.
_CLASSES: dict[str, type[RLMError]] = {
    name: cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, RLMError)
}


def encode_error(exc: BaseException) -> dict[str, Any]:
    """The error reply for ``exc``: an rlm error keeps its class name and bare message (an
    ``AgentError`` also its reason and session folder); cancellation is ``CancelledError``;
    anything else is a bug reported as ``RLMError`` with the exception's type and text."""
    if isinstance(exc, AgentError):
        reply = ErrorReply(
            error_type="AgentError",
            message=exc.message,
            reason=exc.reason,
            session_path=exc.session_path,
        )
    elif isinstance(exc, RLMError):
        reply = ErrorReply(error_type=type(exc).__name__, message=str(exc))
    elif isinstance(exc, asyncio.CancelledError):
        reply = ErrorReply(error_type="CancelledError", message="cancelled")
    else:
        reply = ErrorReply(error_type="RLMError", message=f"{type(exc).__name__}: {exc}")
    return reply.content()


def decode_error(content: Any) -> RLMError:
    """The exception an error reply stands for (a reply that is not even an error reply
    decodes as a plain ``RLMError``, never raises while decoding)."""
    try:
        reply = ErrorReply.model_validate(content)
    except ValidationError:
        return RLMError(f"malformed reply from the orchestrator: {content!r:.200}")
    cls = _CLASSES.get(reply.error_type, RLMError)
    if issubclass(cls, AgentError):
        return cls(
            reply.message, reason=str(reply.reason or "error"), session_path=reply.session_path
        )
    return cls(reply.message)
