"""Limits at their edges: the output ceiling of "no cap", per-depth concurrency slots, and
the token budget's exact boundary. Each runs real kernels against the scripted model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import rlm
from conftest import read_meta, sessions
from scripted_model import ScriptedModel, ipython, reply

#: What one execution keeps when RLM_MAX_OUTPUT is -1 (the default, "no cap").
CEILING = 1_000_000
BEYOND = 250_000


def _tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


# -- the ceiling of "no output cap" ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "dropped"),
    [
        pytest.param(f"print('x' * {CEILING + BEYOND}, end='')", BEYOND, id="printed"),
        # a value is shown as an execute_result (plus a newline), which no stream cap sees
        pytest.param(
            f"class Big:\n    def __repr__(self):\n        return 'x' * {CEILING + BEYOND}\nBig()",
            BEYOND + 1,
            id="value",
        ),
    ],
)
async def test_no_output_cap_still_stops_at_the_memory_ceiling(
    model: ScriptedModel, rlm_env: Path, code: str, dropped: int
) -> None:
    """RLM_MAX_OUTPUT unset (-1, no cap): a cell showing more than a million characters
    gives the model a million of them (head and tail, docs/configuration.md) and a note of
    how many were dropped."""
    model.script(reply(None, ipython(code)), reply("seen"))
    assert await rlm.run("print a lot") == "seen"
    (result,) = _tool_results(model.requests)
    # a million characters kept; of a value, its trailing newline is one of them (the tail)
    assert result.count("x") in (CEILING, CEILING - 1)
    assert result.startswith("x" * (CEILING // 2))
    assert f"output truncated: {dropped} more characters dropped" in result
    assert len(result) < CEILING + 200


# -- concurrency slots are per depth level ---------------------------------------------------


async def test_a_child_holding_the_only_slot_can_still_run_its_grandchild(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RLM_MAX_CONCURRENCY=1: the child waits for its grandchild while holding its depth's
    one slot; the grandchild needs a slot of the next depth. One slot shared by all depths
    would deadlock here (docs/architecture.md), and this test would hit its time limit."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    monkeypatch.setenv("RLM_MAX_CONCURRENCY", "1")
    model.script(
        reply(None, ipython("print(await rlm.run('child: delegate'))")),
        reply("root done"),
        match="root",
    )
    model.script(
        reply(None, ipython("print(await rlm.run('grandchild: leaf'))")),
        reply("child relays"),
        match="child:",
    )
    model.script(reply("leaf answer"), match="grandchild:")
    answer = await asyncio.wait_for(rlm.run("root task"), 60)
    assert model.requests_for("grandchild:"), "the grandchild never ran: the slots deadlocked"
    assert _tool_results(model.requests_for("child:")) == ["leaf answer"]
    assert answer == "root done"
    assert _tool_results(model.requests_for("root")) == ["child relays"]


# -- the token budget ------------------------------------------------------------------------


BUDGET = 10


async def test_the_token_budget_stops_the_agent_when_exactly_spent(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RLM_MAX_TOKENS=10: a reply with tool calls bringing the completion tokens to exactly
    10 ends the agent with ``token_budget``, before its tools run or the model is asked again."""
    monkeypatch.setenv("RLM_MAX_TOKENS", str(BUDGET))
    model.script(
        reply(None, ipython("print('working')"), usage=(5, BUDGET)),
        reply("finished", usage=(5, 1)),
    )
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("budgeted task")
    assert caught.value.reason == "token_budget"
    assert f"budget of {BUDGET} spent" in str(caught.value)
    assert len(model.requests) == 1
    assert model.pending() == 1  # the answer was never asked for
    meta = read_meta(sessions(rlm_env)[0])
    assert meta["stop_reason"] == "token_budget"
    assert meta["usage"]["completion_tokens"] == BUDGET


async def test_one_token_short_of_the_budget_the_agent_goes_on(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_TOKENS", str(BUDGET))
    model.script(
        reply(None, ipython("print('working')"), usage=(5, BUDGET - 1)),
        reply("finished", usage=(5, 1)),
    )
    assert await rlm.run("budgeted task") == "finished"
    assert _tool_results(model.requests) == ["working"]
