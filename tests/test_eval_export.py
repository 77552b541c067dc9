"""``rlm sessions export --per-request`` on a real run: one record per model request, equal
to what the model was sent, weight 0 for the replies not to imitate, no eval columns for a
session that did not come from ``rlm eval``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import rlm
from rlm.cli.main import main as cli_main
from rlm.logs.export_train import RequestRecord
from scripted_model import ScriptedModel, call, ipython, reply

TASK = "per-request probe"


def test_one_record_per_request_with_weights(
    model: ScriptedModel, rlm_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model.script(
        reply("partial", finish_reason="length"),  # cut off: weight 0
        reply(None, call("nope", {"a": 1})),  # unknown tool, refused: weight 0
        reply(None, ipython("x = 1")),  # fine
        reply(None, call("ipython", "{bad")),  # arguments not JSON, refused: weight 0
        reply("final"),
        match=TASK,
    )
    assert asyncio.run(rlm.run(TASK)) == "final"
    (session,) = (rlm_env / "sessions").iterdir()
    code = cli_main(["sessions", "export", session.name, "--format", "jsonl", "--per-request"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = [json.loads(line) for line in out.splitlines()]
    records = [RequestRecord.model_validate(item) for item in data]
    assert [r.weight for r in records] == [0, 0, 1, 0, 1]
    sent = model.requests_for(TASK)
    assert [r.prompt for r in records] == [body["messages"] for body in sent]
    assert all(r.tools == sent[0]["tools"] for r in records)
    assert [r.metadata.request for r in records] == [1, 2, 3, 4, 5]
    assert [r.metadata.finish_reason for r in records][:2] == ["length", "tool_calls"]
    assert records[-1].completion == [{"role": "assistant", "content": "final"}]
    meta = records[0].metadata
    assert (meta.kind, meta.depth, meta.parent, meta.agent_id) == ("turn", 0, None, session.name)
    assert not {"reward", "answer", "metrics", "task", "info", "example_id"} & set(data[0])

    code = cli_main(["sessions", "export", session.name, "--format", "ipynb", "--per-request"])
    _, err = capsys.readouterr()
    assert code == 2 and "--per-request apply to --format jsonl only" in err


def test_hand_edited_tag_and_calls_do_not_break_the_export(
    model: ScriptedModel, rlm_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model.script(reply("fine"), match=TASK)
    assert asyncio.run(rlm.run(TASK, tools=[])) == "fine"
    (session,) = (rlm_env / "sessions").iterdir()
    meta = json.loads((session / "meta.json").read_text())
    meta["eval"] = {"task": "niah", "reward": "lots"}  # not a number
    (session / "meta.json").write_text(json.dumps(meta))
    calls = [
        {"messages": [1, 2], "answer": "x"},  # messages that are not objects: skipped
        {"messages": [{"role": "user", "content": "q"}], "answer": "a", "finish_reason": 3},
    ]
    (session / "llm_calls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))
    code = cli_main(["sessions", "export", session.name, "--format", "jsonl", "--per-request"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [RequestRecord.model_validate_json(line) for line in out.splitlines()]
    assert [r.metadata.kind for r in records] == ["turn", "llm_call"]
    assert all(r.reward is None and r.task is None for r in records)
    assert records[1].metadata.finish_reason is None
