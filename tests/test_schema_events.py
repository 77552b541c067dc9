"""``rlm --events``: every line is one event object of the documented schema."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from helpers import run_cli
from rlm.agent import events as ev
from rlm.schema import Status
from scripted_model import ipython, reply

#: The keys of each event's JSON line, in order (what consumers of ``--events`` parse).
KEYS = {
    "AgentStarted": ["parent_id", "session_path", "task"],
    "ModelRequest": ["turn", "messages"],
    "ModelDelta": ["turn", "part", "text"],
    "ModelResponse": [
        "turn",
        "prompt_tokens",
        "completion_tokens",
        "latency",
        "tool_calls",
        "cost",
    ],
    "ToolStarted": ["turn", "name", "preview"],
    "ToolFinished": ["turn", "name", "duration", "preview", "error"],
    "ChildSpawned": ["child_id", "task"],
    "TurnFinished": ["status"],
    "AgentFinished": [
        "status",
        "stop_reason",
        "turns",
        "prompt_tokens",
        "completion_tokens",
        "elapsed",
    ],
}


def test_events_lines_follow_the_schema(model, rlm_env):
    code = "try:\n    await rlm.run('child: hi', max_turns=1)\nexcept rlm.AgentError as e:\n    print(e)"
    model.script(reply(None, ipython(code)), reply("root done"), match="root")
    model.script(reply(None, ipython("1")), match="child:")
    result = run_cli("--events", "--max-depth", "1", "root task")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    schema = ev.events_json_schema()
    for line in lines:
        jsonschema.validate(line, schema)
        assert list(line) == ["event", "agent_id", "depth", "time", *KEYS[line["event"]]]
    assert {line["event"] for line in lines} == set(KEYS)
    finished = [line for line in lines if line["event"] == "AgentFinished"]
    assert [(f["depth"], f["status"], f["stop_reason"]) for f in finished] == [
        (1, "error", "max_turns"),
        (0, "done", "answer"),
    ]


def test_the_schema_rejects_what_no_event_is():
    schema = ev.events_json_schema()
    good = ev.AgentFinished(
        agent_id="s",
        depth=0,
        status="cancelled",
        stop_reason="cancelled",
        turns=1,
        prompt_tokens=2,
        completion_tokens=3,
        elapsed=0.5,
    )
    assert good.status is Status.CANCELLED
    jsonschema.validate(good.as_dict(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good.as_dict(), "status": "finished"}, schema)
    with pytest.raises(ValidationError):
        ev.AgentFinished(**{**good.model_dump(), "status": "finished"})
    with pytest.raises(ValidationError):
        good.turns = 2  # type: ignore[misc]  # events are frozen
