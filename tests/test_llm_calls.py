"""Sub-model calls from a cell (``rlm.llm`` / ``rlm.llm_batch``), made by the orchestrator.

Real kernels, the real control channel and real HTTP to the scripted model: a prompt sent
with ``rlm.llm`` is routed like a task, by its (first) user message.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import rlm
from conftest import read_meta, sessions
from helpers import read_llm_calls_code
from rlm.cli.live import LiveView
from rlm.cli.main import main as cli_main
from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import ScriptedModel, fault, ipython, reply, wait

SECRET = "sk-test-secret-key"  # conftest's RLM_API_KEY


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def llm_lines(folder: Path) -> list[dict[str, Any]]:
    path = folder / "llm_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def echo(body: dict) -> Any:
    """Answer a sub-model call with its prompt in capitals (item 137 fails for good)."""
    prompt = body["messages"][-1]["content"]
    if prompt == "chunk: 137":
        return fault(400, '{"error": {"message": "scripted refusal of chunk 137"}}')
    return reply(prompt.upper(), usage=(5, 2))


BATCH_CELL = """
import json, os
prompts = [f"chunk: {i}" for i in range(200)]
out = await rlm.llm_batch(prompts)
failed = {i: x.message for i, x in enumerate(out) if isinstance(x, rlm.LlmError)}
ok = [x for x in out if isinstance(x, str)]
leaked = [k for k, v in os.environ.items() if 'sk-test-' + 'secret-key' in v]
print(json.dumps({"ok": ok[:3], "n_ok": len(ok), "in_order": ok == [p.upper() for i, p in
      enumerate(prompts) if i != 137], "failed": failed, "leaked": leaked}))
"""


async def test_llm_batch_of_200_keeps_order_and_reports_one_failure_per_item(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(reply(None, ipython(BATCH_CELL)), reply("root done"), match="root")
    model.script(*[echo] * 200, match="chunk:")
    assert await rlm.run("root task") == "root done"
    (result,) = tool_results(model.requests_for("root"))
    seen = json.loads(result)
    assert seen["n_ok"] == 199 and seen["in_order"] is True, seen
    assert seen["ok"] == ["CHUNK: 0", "CHUNK: 1", "CHUNK: 2"]
    assert list(seen["failed"]) == ["137"]
    assert "scripted refusal of chunk 137" in seen["failed"]["137"]
    assert seen["leaked"] == []
    # the prompt offers the primitive
    assert "rlm.llm_batch" in model.requests_for("root")[0]["messages"][0]["content"]
    # one log line per call, and the usage counted in the caller's meta
    (root,) = sessions(rlm_env)
    lines = llm_lines(root)
    assert len(lines) == 200
    by_prompt = {line["messages"][-1]["content"]: line for line in lines}
    assert by_prompt["chunk: 5"]["answer"] == "CHUNK: 5"
    assert by_prompt["chunk: 5"]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    assert by_prompt["chunk: 5"]["latency"] >= 0 and by_prompt["chunk: 5"]["model"] == "scripted"
    assert "scripted refusal" in by_prompt["chunk: 137"]["error"]
    meta = read_meta(root)
    assert meta["llm_calls"] == 200
    assert meta["llm_usage"] == {"prompt_tokens": 199 * 5, "completion_tokens": 199 * 2}
    assert meta["usage"]["completion_tokens"] >= 199 * 2 + 2 * 7  # two agent turns, 7 each
    assert meta["usage_total"] == meta["usage"]
    # the key never reaches a kernel or a log on this path
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


async def test_refused_at_depth_zero_with_one_clear_line_and_no_model_call(
    model: ScriptedModel, rlm_env: Path
) -> None:
    code = (
        "try:\n    await rlm.llm('chunk: x')\n"
        "except rlm.DepthLimitError as e:\n    print('refused:', e)"
    )
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    await rlm.run("root task")
    (result,) = tool_results(model.requests)
    assert result.startswith("refused:") and "RLM_MAX_DEPTH is 0" in result
    assert len(model.requests) == 2  # no model request for the refused call
    assert "rlm.llm" not in model.requests[0]["messages"][0]["content"]
    assert llm_lines(sessions(rlm_env)[0]) == []


async def test_the_orchestrator_refuses_even_a_kernel_that_skips_its_own_check(
    model: ScriptedModel, rlm_env: Path
) -> None:
    # the kernel-side check only saves a round trip: the limit is the orchestrator's
    code = (
        "rlm.inkernel._state['max_depth'] = 5\n"
        "try:\n    await rlm.llm('chunk: x')\n"
        "except rlm.DepthLimitError as e:\n    print('refused:', e)"
    )
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    await rlm.run("root task")
    (result,) = tool_results(model.requests)
    assert result.startswith("refused:") and "RLM_MAX_DEPTH is 0" in result
    assert len(model.requests) == 2


async def test_the_deepest_agent_may_call_llm_and_its_usage_counts_up_the_tree(
    model: ScriptedModel,
    rlm_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(
        reply(None, ipython("print(await rlm.run('child: summarise'))")),
        reply("root done"),
        match="root",
    )
    child_cell = (
        "a = await rlm.llm('chunk: one', system='be brief', max_tokens=50, json=True)\n"
        "b = asyncio.run(rlm.llm([{'role': 'user', 'content': 'chunk: two'}]))\n"
        "print(a, b)"
    )
    model.script(reply(None, ipython(child_cell)), reply("child done"), match="child:")
    model.script(echo, echo, match="chunk:")
    view = LiveView(Console(record=True, width=200))
    assert await rlm.run("root task", on_event=view) == "root done"
    assert tool_results(model.requests_for("child:")) == ["CHUNK: ONE CHUNK: TWO"]
    view.console.print(view.render())
    shown = view.console.export_text()
    (child_line,) = [line for line in shown.splitlines() if "child: summarise" in line]
    assert "llm 2 (14 tok)" in child_line  # the live view counts them per agent
    assert "llm" not in shown.replace(child_line, "")
    child_prompt = model.requests_for("child:")[0]["messages"][0]["content"]
    assert "rlm.llm" in child_prompt and "rlm.run" not in child_prompt
    first, second = model.requests_for("chunk:")
    assert first["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "chunk: one"},
    ]
    assert first["max_tokens"] == 50 and first["response_format"] == {"type": "json_object"}
    assert "tools" not in first and "response_format" not in second
    (root,) = sessions(rlm_env)
    (child,) = root.glob("sub-*")
    child_meta, meta = read_meta(child), read_meta(root)
    assert child_meta["llm_calls"] == 2 and meta["llm_calls"] == 0
    assert child_meta["llm_usage"] == {"prompt_tokens": 10, "completion_tokens": 4}
    assert len(llm_lines(child)) == 2 and llm_lines(root) == []
    # the child's usage holds its turns and its two calls; the root's total holds the child
    assert child_meta["usage"]["prompt_tokens"] >= 10
    assert meta["usage_total"]["completion_tokens"] == (
        meta["usage"]["completion_tokens"] + child_meta["usage"]["completion_tokens"]
    )
    # `rlm sessions tree` shows the calls per agent; the training export includes them
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert cli_main(["sessions", "tree", root.name, "--home", str(rlm_env)]) == 0
    tree = capsys.readouterr().out
    assert "llm calls" in tree
    (child_row,) = [line for line in tree.splitlines() if child.name in line]
    assert "2 (10/4)" in child_row
    argv = ["sessions", "export", root.name, "--format", "jsonl", "--tree"]
    assert cli_main([*argv, "--home", str(rlm_env)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    calls = [r for r in records if r["metadata"].get("kind") == "llm_call"]
    assert [r["messages"][-1] for r in calls] == [
        {"role": "assistant", "content": "CHUNK: ONE"},
        {"role": "assistant", "content": "CHUNK: TWO"},
    ]
    assert calls[0]["messages"][0] == {"role": "system", "content": "be brief"}
    assert len(records) == 4  # the root, the child and its two calls


CANCEL_CELL = """
import asyncio
try:
    await asyncio.wait_for(rlm.llm_batch([f"chunk: {i}" for i in range(40)]), 2)
    caught = None
except BaseException as exc:
    caught = type(exc).__name__
"""
#: After :data:`CANCEL_CELL` and the wait for the 40 logged calls: what the cell saw.
CANCEL_REPORT = """
print(json.dumps({"caught": caught, "errors": sorted({x.get("error") for x in lines})}))
"""


async def test_a_cancelled_batch_cancels_its_pending_calls_while_the_cell_goes_on(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_LLM_CONCURRENCY", "4")
    release = threading.Event()
    model.script(
        reply(None, ipython(CANCEL_CELL + read_llm_calls_code(rlm_env, 40) + CANCEL_REPORT)),
        reply("root done"),
        match="root",
    )
    model.script(*[wait(release, timeout=60)] * 40, match="chunk:")
    try:
        assert await rlm.run("root task") == "root done"
    finally:
        release.set()
    seen = json.loads(tool_results(model.requests_for("root"))[0])
    assert seen == {"caught": "TimeoutError", "errors": ["cancelled"]}, seen
    # the queued ones were cancelled before reaching the model (a few may slip into a slot
    # freed by a cancelled call before their own cancel arrives, never all of them)
    assert len(model.requests_for("chunk:")) < 40


async def test_gathered_calls_are_bounded_by_the_run_wide_concurrency(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_LLM_CONCURRENCY", "3")
    arrived = threading.Semaphore(0)
    full = threading.Event()
    count = [0]
    lock = threading.Lock()

    def held(body: dict) -> Any:
        # hold every call until three are in flight: with a working bound that is the most
        # there can be; without it, all twelve would arrive
        with lock:
            count[0] += 1
            if count[0] == 3:
                full.set()
        arrived.release()
        return wait(full, then=reply("x"), timeout=30)

    code = (
        "out = await asyncio.gather(*(rlm.llm(f'chunk: {i}') for i in range(12)))\nprint(len(out))"
    )
    model.script(reply(None, ipython(code)), reply("root done"), match="root")
    model.script(*[held] * 12, match="chunk:")
    settings = load_settings()
    async with Orchestrator(settings) as orchestrator:
        assert await orchestrator.run("root task") == "root done"
        assert orchestrator.llm.peak == 3
    assert tool_results(model.requests_for("root")) == ["12"]


async def test_a_call_from_a_cell_that_has_ended_is_refused(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    start = (
        "gate = asyncio.Event()\n"
        "async def late():\n    await gate.wait()\n    return await rlm.llm('chunk: late')\n"
        "t = asyncio.ensure_future(late())\nprint('started')"
    )
    check = (
        "gate.set()\ntry:\n    print('answer:', await t)\n"
        "except rlm.LlmError as e:\n    print('refused:', e.message)"
    )
    model.script(
        reply(None, ipython(start)), reply(None, ipython(check)), reply("done"), match="root"
    )
    model.script(reply("never"), match="chunk:")
    assert await rlm.run("root task", max_turns=5) == "done"
    first, second = tool_results(model.requests_for("root"))
    assert first == "started"
    assert second.startswith("refused: the cell that called rlm.llm has ended"), second
    assert model.requests_for("chunk:") == []
    assert model.pending("chunk:") == 1


async def test_outside_a_kernel_llm_says_where_it_works() -> None:
    with pytest.raises(rlm.RLMError, match="inside an rlm agent's kernel"):
        await rlm.llm("hello")
    with pytest.raises(rlm.RLMError, match="inside an rlm agent's kernel"):
        await rlm.llm_batch(["hello"])
