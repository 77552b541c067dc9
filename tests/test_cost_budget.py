"""The run's cost budget (``RLM_MAX_COST``), counted over the whole tree.

Real kernels, the real control channel and real HTTP to the scripted model; prices come
through ``RLM_PRICES`` as a user gives them. The scripted model is priced at $1 per
completion token (and nothing per prompt token), so every reply's cost is its completion
tokens and the expected stopping point can be counted by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlm
from conftest import read_meta, sessions
from helpers import run_cli
from scripted_model import ScriptedModel, ipython, reply

PRICES = json.dumps({"scripted": {"prompt": 0, "completion": 1_000_000}})

FAN_OUT = """
import asyncio, json
first = await rlm.llm("chunk: a")
async def child(i):
    try:
        return await rlm.run(f"child {i}")
    except rlm.AgentError as e:
        return f"refused: {e.reason}"
results = await asyncio.gather(*(child(i) for i in range(5)))
try:
    await rlm.llm("chunk: b")
    late = "allowed"
except rlm.AgentError as e:
    late = f"refused: {e.reason}: {e}"
print(json.dumps({"first": first, "results": results, "late": late}))
"""


@pytest.fixture
def priced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_PRICES", PRICES)
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_MAX_CONCURRENCY", "1")  # children one at a time: a fixed order


async def test_a_tree_that_fans_out_stops_with_cost_budget_where_the_budget_runs_out(
    model: ScriptedModel, rlm_env: Path, priced: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $1 root turn + $1 rlm.llm + $1 per child: after the second child $4 >= $3.5 is spent;
    # that child's request was allowed ($3 < $3.5) and finishes, everything after is refused
    monkeypatch.setenv("RLM_MAX_COST", "3.5")
    model.script(reply(None, ipython(FAN_OUT), usage=(0, 1)), reply("never"), match="root")
    model.script(reply("A", usage=(0, 1)), reply("B", usage=(0, 1)), match="chunk:")
    model.script(*[reply("child done", usage=(0, 1))] * 5, match="child")
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("root task")
    assert caught.value.reason == "cost_budget"
    assert "RLM_MAX_COST" in str(caught.value)
    assert len(model.requests) == 4  # root turn, one rlm.llm, two children: nothing more
    (root,) = sessions(rlm_env)
    meta = read_meta(root)
    assert meta["status"] == "error" and meta["stop_reason"] == "cost_budget"
    assert meta["cost_total"] == pytest.approx(4.0)
    assert meta["cost"] == pytest.approx(2.0)  # its own turn and its rlm.llm call
    assert meta["usage_total"]["completion_tokens"] == 4
    assert [c["status"] for c in meta["children"]] == ["done", "done"]
    for child in meta["children"]:
        assert read_meta(root / child["id"])["cost"] == pytest.approx(1.0)
    # the partial state is logged: the cell's result is in the root's messages
    lines = [json.loads(x) for x in (root / "messages.jsonl").read_text().splitlines()]
    (tool,) = [x for x in lines if x.get("role") == "tool"]
    seen = json.loads(tool["content"])
    assert seen["first"] == "A"
    assert seen["results"] == ["child done"] * 2 + ["refused: cost_budget"] * 3
    assert seen["late"].startswith("refused: cost_budget") and "RLM_MAX_COST" in seen["late"]


async def test_without_a_budget_the_tree_cost_is_still_reported(
    model: ScriptedModel, rlm_env: Path, priced: None
) -> None:
    model.script(
        reply(None, ipython(FAN_OUT), usage=(0, 1)), reply("ok", usage=(0, 3)), match="root"
    )
    model.script(reply("A", usage=(0, 1)), reply("B", usage=(0, 1)), match="chunk:")
    model.script(*[reply("child done", usage=(0, 1))] * 5, match="child")
    assert await rlm.run("root task") == "ok"
    meta = read_meta(sessions(rlm_env)[0])
    assert meta["cost_total"] == pytest.approx(1 + 2 + 5 + 3)


def test_the_cli_refuses_a_budget_for_a_model_without_a_price(
    model: ScriptedModel, rlm_env: Path
) -> None:
    result = run_cli(
        "task", env={"RLM_MAX_COST": "1", "RLM_PRICES": '{"other": {"prompt": 1, "completion": 1}}'}
    )
    assert result.returncode == 2, result.stderr
    assert "no price for model 'scripted'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert model.requests == []


def test_json_reports_the_tree_cost_next_to_usage(model: ScriptedModel, rlm_env: Path) -> None:
    model.script(reply("42", usage=(1_000_000, 2)))
    result = run_cli("--json", "compute", env={"RLM_PRICES": PRICES, "RLM_MAX_COST": "100"})
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["usage"] == {"prompt_tokens": 1_000_000, "completion_tokens": 2}
    assert record["cost"] == pytest.approx(2.0)
