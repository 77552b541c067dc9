"""``rlm sessions export --format jsonl``: training records in the OpenAI tools format.

One JSON object per agent::

    {"messages": [...], "tools": [...], "metadata": {...}}

``messages`` is the live context exactly as the model received it in the agent's last
request (summaries and window drops applied, rebuilt from the log with
:func:`rlm.agent.context.rebuild_context`, as ``--resume`` does) followed by the model's reply to
it: for a finished agent its final answer. Messages carry only ``role``, ``content``,
``tool_calls`` and ``tool_call_id``. ``tools`` are the function schemas of the agent's
enabled tools, rebuilt from the settings in its ``meta.json`` by the installed rlm.

Each successful sub-model call of the agent (a line of its ``llm_calls.jsonl``) follows as
a record of its own: the messages it sent and the answer, ``tools: []`` and
``metadata.kind: "llm_call"`` (agent records have no ``kind``).

``--per-request`` (:func:`request_records`) writes one record per model call instead, in the
prompt/completion layout of Hugging Face TRL and the ``verifiers`` library (see
:class:`RequestRecord`, and docs/eval.md for every field).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlm.agent.context import rebuild_context
from rlm.agent.tools import enabled_tools
from rlm.config import BUILTIN_TOOLS, Settings
from rlm.logs.replay import clean_message, discarded_lines, last_request
from rlm.logs.store import AgentNode, read_log
from rlm.schema import Status

__all__ = [
    "RequestMetadata",
    "RequestRecord",
    "llm_records",
    "record_for",
    "records",
    "request_records",
    "tool_schemas",
]


def tool_schemas(settings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tool schemas an agent with these (logged) settings was sent.

    The settings are taken as logged, without validation and without reading ``RLM_*``
    variables, so unrelated environment values cannot change or break the export."""
    settings = dict(settings or {})
    names = settings.get("tools")
    if not isinstance(names, (list, tuple)):
        names = Settings.model_fields["tools"].default
    known = {k: v for k, v in settings.items() if k in Settings.model_fields}
    known["tools"] = tuple(name for name in names if name in BUILTIN_TOOLS)
    resolved = Settings.model_construct(**known)
    return [tool.schema(resolved) for tool in enabled_tools(resolved).values()]


def record_for(node: AgentNode) -> dict[str, Any] | None:
    """The training record of one agent; ``None`` when it never got a reply."""
    replay = last_request(node.log.records, node.meta)
    if replay.last_request is None or replay.last_reply is None:
        return None
    return {
        "messages": [*replay.last_request, replay.last_reply],
        "tools": tool_schemas(node.meta.settings),
        "metadata": {
            "session_id": node.session_id,
            "agent_id": node.id,
            "depth": node.depth,
            "parent": node.parent.id if node.parent else None,
            "model": node.model,
            "status": node.status,
            "stop_reason": node.stop_reason,
            "turns": node.turns,
            "usage": node.meta.usage.to_json(),
        },
    }


def records(top: AgentNode, *, tree: bool = False, only_done: bool = False) -> Iterator[dict]:
    """Records of ``top`` (and with ``tree`` of every agent below it, depth first)."""
    for node in top.walk() if tree else [top]:
        if only_done and node.status != Status.DONE:
            continue
        record = record_for(node)
        if record is not None:
            yield record
        yield from llm_records(node)


def llm_records(node: AgentNode) -> Iterator[dict[str, Any]]:
    """Training records of the agent's answered ``rlm.llm`` calls, in the order they ended."""
    for line in read_log(node.path / "llm_calls.jsonl").records:
        messages, answer = line.get("messages"), line.get("answer")
        if line.get("error") or not isinstance(messages, list) or not isinstance(answer, str):
            continue
        yield {
            "messages": [*messages, {"role": "assistant", "content": answer}],
            "tools": [],
            "metadata": {
                "session_id": node.session_id,
                "agent_id": node.id,
                "kind": "llm_call",
                "depth": node.depth,
                "model": line.get("model"),
                "usage": line.get("usage"),
            },
        }


# ------------------------------------------------------------------------------------------
# --per-request: one record per model call
# ------------------------------------------------------------------------------------------

#: A tool result with this prefix is the harness refusing the call (unknown tool, arguments
#: that are not JSON or do not validate, a tool error): the call was a mistake to learn from,
#: not to imitate.
TOOL_ERROR_PREFIX = "Error: "


class RequestMetadata(BaseModel):
    """Where a request record comes from (``metadata`` of :class:`RequestRecord`)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str
    agent_id: str
    parent: str | None
    """The parent agent's id; ``None`` for the root."""
    depth: int
    kind: Literal["turn", "llm_call"]
    """An agent's turn, or an ``rlm.llm`` sub-call of one of its cells."""
    request: int
    """1-based position of the request among the agent's records of this kind."""
    model: str | None
    finish_reason: str | None
    usage: dict[str, Any] | None
    status: str | None
    """The agent's status at export (``done``, ``error``, ...)."""
    stop_reason: str | None


class RequestRecord(BaseModel):
    """One model call as a training record (``--per-request``).

    ``prompt`` + ``completion`` is the conversational prompt-completion layout of TRL's
    ``SFTTrainer`` (the loss is on the completion) and the rollout columns of ``verifiers``;
    for OpenAI fine-tuning, ``messages = prompt + completion`` with ``weight`` on the last
    message (docs/eval.md). The eval columns are present only for sessions of ``rlm eval``.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: list[dict[str, Any]]
    """The messages the model was sent, as it was sent them (system prompt first)."""
    completion: list[dict[str, Any]] = Field(min_length=1, max_length=1)
    """The assistant message it replied with."""
    tools: list[dict[str, Any]]
    """The tool schemas sent with the request (``[]`` for a sub-call)."""
    weight: Literal[0, 1]
    """0 when the reply should not be imitated: cut off by the token limit, rolled back
    (cancelled or failed turn), or a tool call the harness refused."""
    metadata: RequestMetadata
    task: str | None = None
    """``rlm eval`` only: the family (verifiers' ``task``)."""
    example_id: str | None = None
    """``rlm eval`` only: the task id."""
    answer: str | list[str] | None = None
    """``rlm eval`` only: the gold answer."""
    reward: float | None = None
    """``rlm eval`` only: the task's score in [0, 1], for every request of its tree."""
    metrics: dict[str, float] | None = None
    info: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as written: the eval columns only when the session has them."""
        data = self.model_dump(mode="json")
        for key in ("task", "example_id", "answer", "reward", "metrics", "info"):
            if data[key] is None:
                del data[key]
        return data


def _eval_columns(node: AgentNode) -> dict[str, Any]:
    """The root's ``eval`` tag (written by ``rlm eval``) as record columns."""
    extra = node.root.meta.model_extra or {}
    tag = extra.get("eval")
    if not isinstance(tag, dict):
        return {}
    columns: dict[str, Any] = {}
    for key in ("task", "example_id", "answer", "reward", "metrics", "info"):
        if key in tag:
            columns[key] = tag[key]
    return columns


def _replayable(line: dict[str, Any]) -> bool:
    """A summarize event without its two turn numbers (a damaged log) cannot be replayed."""
    if line.get("event") != "summarize":
        return True
    turns = line.get("turns")
    return isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, int) for t in turns)


def _refused(records: list[dict[str, Any]], index: int) -> bool:
    """Whether a tool call of the assistant line ``index`` got an error from the harness."""
    ids = {str(call.get("id")) for call in records[index].get("tool_calls") or []}
    for record in records[index + 1 :]:
        role = record.get("role")
        if role == "assistant" or (role == "user" and record.get("kind") != "nudge"):
            break
        if role == "tool" and str(record.get("tool_call_id")) in ids:
            content = record.get("content")
            if isinstance(content, str) and content.startswith(TOOL_ERROR_PREFIX):
                return True
    return False


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _metadata(
    node: AgentNode, kind: Literal["turn", "llm_call"], number: int, line: dict[str, Any]
) -> RequestMetadata:
    return RequestMetadata(
        session_id=node.session_id,
        agent_id=node.id,
        parent=node.parent.id if node.parent else None,
        depth=node.depth,
        kind=kind,
        request=number,
        model=_text(line.get("served_model")) or _text(line.get("model")) or node.model or None,
        finish_reason=_text(line.get("finish_reason")),
        usage=line.get("usage") if isinstance(line.get("usage"), dict) else None,
        status=str(node.status) if node.status is not None else None,
        stop_reason=str(node.stop_reason) if node.stop_reason is not None else None,
    )


def _record(columns: dict[str, Any], **fields: Any) -> dict[str, Any] | None:
    """The record as JSON; a hand-edited ``eval`` tag that does not validate is left out,
    and a log line that cannot make a valid record (messages that are not objects) is
    skipped, as the other exporters skip unreadable lines."""
    for extra in (columns, {}):
        try:
            return RequestRecord(**fields, **extra).to_json()
        except ValidationError:
            continue
    return None


def request_records(
    top: AgentNode, *, tree: bool = False, only_done: bool = False
) -> Iterator[dict[str, Any]]:
    """One record per model request of ``top`` (and with ``tree`` of every agent below):
    each assistant line of ``messages.jsonl`` with the context rebuilt up to it, then each
    answered ``rlm.llm`` call."""
    for node in top.walk() if tree else [top]:
        if only_done and node.status != Status.DONE:
            continue
        columns = _eval_columns(node)
        lines = node.log.records
        gone = discarded_lines(lines)
        tools = tool_schemas(node.meta.settings)
        window = node.meta.settings.get("max_turns_in_context", -1)
        window = window if isinstance(window, int) else -1
        number = 0
        for index, line in enumerate(lines):
            if line.get("role") != "assistant" or line.get("kind") == "context":
                continue
            number += 1
            prompt = rebuild_context(
                [r for r in lines[:index] if _replayable(r)], window
            ).messages()
            cut = line.get("finish_reason") == "length"
            weight = 0 if cut or index in gone or _refused(lines, index) else 1
            record = _record(
                columns,
                prompt=[clean_message(m) for m in prompt],
                completion=[clean_message(line)],
                tools=tools,
                weight=weight,
                metadata=_metadata(node, "turn", number, line),
            )
            if record is not None:
                yield record
        number = 0
        for call in read_log(node.path / "llm_calls.jsonl").records:
            messages, answer = call.get("messages"), call.get("answer")
            if call.get("error") or not isinstance(messages, list) or not isinstance(answer, str):
                continue
            number += 1
            record = _record(
                columns,
                prompt=messages,
                completion=[{"role": "assistant", "content": answer}],
                tools=[],
                weight=0 if call.get("finish_reason") == "length" else 1,
                metadata=_metadata(node, "llm_call", number, call),
            )
            if record is not None:
                yield record
