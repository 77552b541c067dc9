"""``metrics`` in meta.json: the flat numbers an RL harness reads as they are.

PrimeIntellect's ``verifiers`` harness reads ``.rlm/sessions/*/meta.json``, takes the object
under ``metrics`` and keeps every number as ``rlm_<key>``: so the keys are flat and numeric.
Real kernels, the real control channel and the scripted model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import rlm
from conftest import read_meta, sessions
from rlm.schema.meta import Metrics
from scripted_model import ScriptedModel, call, ipython, reply

CELL_ONE = "x = 'a' * 3\nprint(x)"
CELL_ERROR = "1/0"
#: Reads its own meta.json until the metrics count the cells before it: written as it goes.
CELL_CALLS = """
import json, pathlib, time
meta = pathlib.Path({folder!r}) / 'meta.json'
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    seen = json.loads(meta.read_text())['metrics']
    if seen['ipython_cells'] == 2:
        break
    time.sleep(0.02)
print(seen['ipython_cells'], seen['ipython_cell_errors'], seen['turns'])
print(await rlm.llm('chunk: one'), await tally(1), await rlm.run('child: go'))
"""


def tally(value: int) -> int:
    """Count in the calling program."""
    return value + 1


async def test_a_run_writes_metrics_a_trainer_reads_as_numbers(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    calls_cell: dict[str, str] = {}

    def third(body: dict[str, Any]) -> Any:
        (root,) = sessions(rlm_env)
        calls_cell["code"] = CELL_CALLS.format(folder=str(root))
        return reply(None, ipython(calls_cell["code"]))

    model.script(
        reply(None, ipython(CELL_ONE)),
        reply(None, ipython(CELL_ERROR), call("no_such_tool", {})),
        third,
        reply(None, call("summarize", {"num_turns": 2, "summary": "x is aaa"})),
        reply("root done"),
        match="root",
    )
    model.script(reply("child done"), match="child:")
    model.script(reply("ONE", usage=(5, 2)), match="chunk:")
    assert await rlm.run("root task", functions=[tally]) == "root done"

    (root,) = sessions(rlm_env)
    (child,) = root.glob("sub-*")
    meta, child_meta = read_meta(root), read_meta(child)
    metrics = meta["metrics"]
    # what the harness does with it: every value a plain number
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    assert set(metrics) == set(Metrics.model_fields)
    chars = len(CELL_ONE) + len(CELL_ERROR) + len(calls_cell["code"])
    usage, total = meta["usage"], meta["usage_total"]
    expected = {
        "turns": 5,
        "tool_calls": 5,
        "tool_errors": 1,  # the unknown tool
        "tool_calls_ipython": 3,
        "tool_calls_summarize": 1,
        "tool_calls_bash": 0,
        "tool_calls_edit": 0,
        "ipython_cells": 3,
        "ipython_cell_errors": 1,
        "ipython_input_chars": chars,
        "mean_cell_chars": round(chars / 3, 1),
        "sub_agents": 1,
        "sub_agents_any": 1,
        "llm_calls": 1,
        "host_function_calls": 1,
        "summaries": 1,
        "compactions": 0,
        "kernel_restarts": 0,
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "tokens": usage["prompt_tokens"] + usage["completion_tokens"],
        "tree_prompt_tokens": total["prompt_tokens"],
        "tree_completion_tokens": total["completion_tokens"],
        "tree_tokens": total["prompt_tokens"] + total["completion_tokens"],
        "cost": 0.0,  # the scripted model has no price
        "tree_cost": 0.0,
    }
    assert {k: metrics[k] for k in expected} == expected
    assert total["completion_tokens"] > usage["completion_tokens"] > 2  # the child counted
    assert 0 < metrics["wall_time"] < 120
    # while it ran: the third cell read two cells (one failed) after two turns
    (seen,) = [
        m["content"] for m in model.requests_for("root")[3]["messages"] if m["role"] == "tool"
    ][-1:]
    assert seen.splitlines()[0] == "2 1 3"
    child_metrics = child_meta["metrics"]
    assert child_metrics["turns"] == 1 and child_metrics["tool_calls"] == 0
    assert child_metrics["sub_agents"] == 0 and child_metrics["sub_agents_any"] == 0


def test_metrics_read_leniently() -> None:
    """A hand-edited or foreign value reads as 0 instead of hiding the session."""
    metrics = Metrics.model_validate(
        {"turns": 3, "tool_calls": "x", "cost": -1.0, "wall_time": float("nan"), "extra": 2}
    )
    assert (metrics.turns, metrics.tool_calls, metrics.cost, metrics.wall_time) == (3, 0, 0, 0)
    assert metrics.to_json()["extra"] == 2  # another version's key is kept
    assert json.loads(json.dumps(metrics.to_json()))["turns"] == 3
