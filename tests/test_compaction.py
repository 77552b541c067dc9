"""Automatic compaction: past ``RLM_COMPACT_AT_TOKENS``, or when the endpoint refuses a
request as longer than its context, the model summarizes its older turns, which are dropped;
the kernel keeps its state. Real kernels and the scripted model (prompt sizes are given as
the usage each reply reports)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import rlm
from conftest import read_log, read_meta, sessions
from rlm.agent.context import rebuild_context
from rlm.agent.overflow import COMPACT_PROMPT
from rlm.cli.main import main as cli_main
from scripted_model import ScriptedModel, fault, ipython, reply

OVERFLOW = (
    '{"error": {"message": "This model\'s maximum context length is 4096 tokens. However, '
    'your messages resulted in 5000 tokens.", "type": "invalid_request_error", '
    '"code": "context_length_exceeded"}}'
)


def contents(request: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in request["messages"]]


def tool_calls(request: dict[str, Any]) -> list[str]:
    return [
        c["function"]["arguments"] for m in request["messages"] for c in m.get("tool_calls") or []
    ]


async def test_past_the_threshold_older_turns_become_a_summary_and_the_kernel_stays(
    model: ScriptedModel,
    rlm_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("RLM_COMPACT_AT_TOKENS", "100")
    model.script(
        reply(None, ipython("a = 1"), usage=(50, 5)),
        reply(None, ipython("b = 2"), usage=(150, 5)),  # past 100: compact before the next
        reply("SUMMARY: a is 1", usage=(160, 9)),
        reply(None, ipython("print(a + b)"), usage=(60, 5)),
        reply("done", usage=(70, 2)),
        match="root task",
    )
    assert await rlm.run("root task") == "done"
    requests = model.requests_for("root task")
    assert len(requests) == 5
    ask = requests[2]
    assert contents(ask)[-1] == COMPACT_PROMPT
    # the summary covers the first turn; the turn in progress is kept after it
    assert any("a = 1" in c for c in tool_calls(ask))
    assert not any("b = 2" in c for c in tool_calls(ask))
    after = requests[3]
    assert not any("a = 1" in c for c in tool_calls(after))
    assert any("b = 2" in c for c in tool_calls(after))
    assert any("SUMMARY: a is 1" in c and "[turns 1-1]" in c for c in contents(after))
    assert contents(requests[4])[-1].startswith("3")  # a survived in the kernel
    (root,) = sessions(rlm_env)
    meta = read_meta(root)
    assert meta["metrics"]["compactions"] == 1 and meta["metrics"]["summaries"] == 0
    assert meta["metrics"]["kernel_restarts"] == 0
    assert meta["usage"]["completion_tokens"] == 5 + 5 + 9 + 5 + 2  # the summary counted
    (event,) = [line for line in read_log(root) if line.get("event") == "summarize"]
    assert event["automatic"] is True and event["reason"] == "compact_at_tokens"
    assert event["turns"] == [1, 1] and event["summary"] == "SUMMARY: a is 1"
    # sessions show and the notebook export show the summary (no tool call carries it)
    capsys.readouterr()
    home = ["--home", str(rlm_env)]
    assert cli_main(["sessions", "show", root.name, "--color", "never", *home]) == 0
    shown = capsys.readouterr().out
    assert "✂ compacted (compact_at_tokens): turns 1-1 left the context" in shown
    assert "    SUMMARY: a is 1" in shown
    out = tmp_path / "nb"
    assert (
        cli_main(["sessions", "export", root.name, "--format", "ipynb", "-o", str(out), *home]) == 0
    )
    (notebook,) = out.glob("*.ipynb")
    cells = json.loads(notebook.read_text())["cells"]
    assert any(
        "compacted (compact_at_tokens)" in "".join(c["source"])
        and "SUMMARY: a is 1" in "".join(c["source"])
        for c in cells
        if c["cell_type"] == "markdown"
    )
    # a resumed session rebuilds the compacted context, not the full one
    rebuilt = rebuild_context(read_log(root)).messages()
    assert not any("a = 1" in c for c in tool_calls({"messages": rebuilt}))
    assert any("SUMMARY: a is 1" in str(m.get("content")) for m in rebuilt)


async def test_max_compactions_zero_never_compacts(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_COMPACT_AT_TOKENS", "100")
    monkeypatch.setenv("RLM_MAX_COMPACTIONS", "0")
    model.script(
        reply(None, ipython("a = 1"), usage=(150, 5)),
        reply(None, ipython("b = 2"), usage=(150, 5)),
        reply("done", usage=(150, 2)),
        match="root task",
    )
    assert await rlm.run("root task") == "done"
    assert all(COMPACT_PROMPT not in contents(r) for r in model.requests_for("root task"))
    (root,) = sessions(rlm_env)
    assert read_meta(root)["metrics"]["compactions"] == 0


async def test_a_context_length_error_compacts_once_and_sends_the_request_again(
    model: ScriptedModel, rlm_env: Path
) -> None:
    model.script(
        reply(None, ipython("a = 1")),
        reply(None, ipython("b = 2")),
        fault(400, OVERFLOW),
        reply("SUMMARY: a is 1"),
        reply("done"),
        match="root task",
    )
    assert await rlm.run("root task") == "done"
    requests = model.requests_for("root task")
    assert contents(requests[3])[-1] == COMPACT_PROMPT
    assert any("SUMMARY: a is 1" in c for c in contents(requests[4]))
    (root,) = sessions(rlm_env)
    meta = read_meta(root)
    assert meta["status"] == "done" and meta["metrics"]["compactions"] == 1
    (event,) = [line for line in read_log(root) if line.get("event") == "summarize"]
    assert event["reason"] == "context_length"


async def test_a_second_context_length_error_ends_the_agent_with_the_endpoint_message(
    model: ScriptedModel, rlm_env: Path
) -> None:
    model.script(
        reply(None, ipython("a = 1")),
        reply(None, ipython("b = 2")),
        fault(400, OVERFLOW),
        reply("SUMMARY: a is 1"),
        fault(400, OVERFLOW),
        match="root task",
    )
    with pytest.raises(rlm.AgentError, match=r"context full \(5,000 > 4,096 tokens\)") as info:
        await rlm.run("root task")
    assert info.value.reason == "model_error"
    assert len(model.requests_for("root task")) == 5  # no second compaction
