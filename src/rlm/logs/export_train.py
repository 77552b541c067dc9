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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rlm.agent.tools import enabled_tools
from rlm.config import BUILTIN_TOOLS, Settings
from rlm.logs.replay import last_request
from rlm.logs.store import AgentNode, read_log
from rlm.schema import Status

__all__ = ["llm_records", "record_for", "records", "tool_schemas"]


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
