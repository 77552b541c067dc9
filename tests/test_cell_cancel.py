"""A cell that ends while its ``rlm.llm_batch`` items and host-function calls are still
pending (here: interrupted at its tool timeout) takes them with it: the orchestrator cancels
every call it still holds for that cell, queued or in flight, and logs each as cancelled.
Real kernels, the real control channel and the scripted model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import rlm
from conftest import read_log, sessions
from helpers import never_returning, read_llm_calls_code
from scripted_model import ScriptedModel, ipython, reply, wait

#: Forty sub-model calls (four at a time) and a host function that never returns, gathered;
#: the cell's 2 s timeout interrupts it.
PENDING = """
import asyncio
await asyncio.gather(rlm.llm_batch([f"chunk: {i}" for i in range(40)]), forever())
"""
#: The next cell, after waiting for the 40 logged calls: what the orchestrator did with them.
AFTER = """
print(json.dumps({"host_cancelled": await was_cancelled(), "llm_lines": len(lines),
                  "errors": sorted({str(x.get("error")) for x in lines})}))
"""


async def test_an_interrupted_cell_cancels_its_pending_llm_batch_items_and_host_calls(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_LLM_CONCURRENCY", "4")
    host = never_returning()
    release = threading.Event()
    model.script(
        reply(None, ipython(PENDING, timeout=2)),
        reply(None, ipython(read_llm_calls_code(rlm_env, 40) + AFTER)),
        reply("root done"),
        match="root",
    )
    model.script(*[wait(release, timeout=60)] * 40, match="chunk:")
    try:
        answer = await rlm.run("root task", functions=[host.forever, host.was_cancelled])
        assert answer == "root done"
    finally:
        release.set()
    (root,) = sessions(rlm_env)
    interrupted, after = [line["content"] for line in read_log(root) if line.get("role") == "tool"]
    assert "KeyboardInterrupt" in interrupted or "interrupt" in interrupted.lower(), interrupted
    seen = json.loads(after)
    assert seen == {"host_cancelled": True, "llm_lines": 40, "errors": ["cancelled"]}, seen
    assert host.started.is_set()
    # the queued ones were cancelled before reaching the model (a few may take a slot freed
    # by a cancelled call before their own cancel arrives, never all of them)
    assert len(model.requests_for("chunk:")) < 40
    calls = (root / "function_calls.jsonl").read_text().splitlines()
    assert [(json.loads(c)["name"], json.loads(c).get("error")) for c in calls] == [
        ("forever", "cancelled"),
        ("was_cancelled", None),
    ]
