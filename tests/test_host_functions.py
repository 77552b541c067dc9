"""Host functions: callables of the calling program, run in the orchestrator, called from cells.

Real kernels, the real control channel and the scripted model. The functions close over
state of this test process, which no kernel could reach on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import rlm
from conftest import sessions
from helpers import never_returning, run_cli
from rlm.cli.live import LiveView
from scripted_model import ScriptedModel, ipython, reply


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def lines(folder: Path) -> list[dict[str, Any]]:
    path = folder / "function_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def make_counter() -> tuple[Any, list[int]]:
    seen: list[int] = []

    def record(value: int, label: str = "x") -> int:
        """Add ``value`` to the host's tally and return how many were recorded.

        The tally lives in the calling program."""
        seen.append(value)
        return len(seen)

    return record, seen


async def test_a_depth_two_sub_agent_calls_a_host_function_that_closes_over_host_state(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    record, seen = make_counter()
    model.script(
        reply(None, ipython("print(await record(1))")),
        reply(None, ipython("print(await rlm.run('child: go down'))")),
        reply("root done"),
        match="root",
    )
    model.script(
        reply(None, ipython("print(await rlm.run('grandchild: count'))")),
        reply("child done"),
        match="child:",
    )
    cell = (
        "n = await record(41, label='deep')\n"
        "import inspect\n"
        "print(n, inspect.signature(record), record.__doc__.splitlines()[0])"
    )
    model.script(reply(None, ipython(cell)), reply("grandchild done"), match="grandchild:")
    view = LiveView(Console(record=True, width=200))
    assert await rlm.run("root task", functions=[record], on_event=view) == "root done"
    assert seen == [1, 41]
    view.console.print(view.render())
    shown = view.console.export_text().splitlines()
    assert [line for line in shown if "fn 1" in line] == [shown[0]]  # the root's line
    (deep,) = tool_results(model.requests_for("grandchild:"))
    assert deep == (
        "2 (value: 'int', label: 'str' = 'x') -> 'int' "  # annotations as text in the kernel
        "Add ``value`` to the host's tally and return how many were recorded."
    )
    prompt = model.requests_for("grandchild:")[0]["messages"][0]["content"]
    assert "## Host functions" in prompt and "`await record(value: int, label: str = 'x')" in prompt
    (root,) = sessions(rlm_env)
    (grandchild,) = root.glob("sub-*/sub-*")
    (call,) = lines(grandchild)
    assert call["name"] == "record" and call["arguments"] == '41, label="deep"'
    assert "error" not in call and call["duration"] >= 0
    assert [c["arguments"] for c in lines(root)] == ["1"]


FAILURES = """
import asyncio
import json
out = {}
for name, call in [
    ("wrong type", lambda: record("many")),
    ("missing", lambda: record()),
    ("unknown keyword", lambda: record(1, colour="red")),
    ("raises", lambda: explode("boom")),
    ("unserialisable", lambda: handle()),
]:
    try:
        out[name] = await call()
    except rlm.FunctionError as exc:
        out[name] = exc.message
out["then"] = await record(2)
print(json.dumps(out))
"""


async def test_bad_arguments_raising_and_unserialisable_results_reach_the_cell(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    record, seen = make_counter()

    async def explode(why: str) -> None:
        """Always fails."""
        raise RuntimeError(f"exploded: {why}")

    def handle() -> object:
        return object()

    model.script(reply(None, ipython(FAILURES)), reply("done"), match="root")
    assert await rlm.run("root task", functions=[record, explode, handle]) == "done"
    out = json.loads(tool_results(model.requests_for("root"))[0])
    assert out["wrong type"].startswith("invalid arguments for record: value:"), out
    assert "missing a required argument: 'value'" in out["missing"], out
    assert "unexpected keyword argument 'colour'" in out["unknown keyword"], out
    assert out["raises"] == "explode raised RuntimeError: exploded: boom"
    assert out["unserialisable"].startswith("handle returned unserialisable result"), out
    assert out["then"] == 1 and seen == [2]  # a failed call changes nothing
    (root,) = sessions(rlm_env)
    logged = lines(root)
    assert [c["name"] for c in logged] == ["record"] * 3 + ["explode", "handle", "record"]
    assert "exploded: boom" in logged[3]["error"] and "error" not in logged[-1]


async def test_a_session_offers_its_functions_and_bad_functions_are_refused_at_once(
    model: ScriptedModel, rlm_env: Path
) -> None:
    record, seen = make_counter()
    model.script(reply(None, ipython("print(await record(7))")), reply("ok"), match="first")
    async with rlm.Session(functions=[record]) as session:
        assert await session.send("first message") == "ok"
    assert seen == [7] and tool_results(model.requests_for("first")) == ["1"]
    with pytest.raises(rlm.ConfigError, match="two functions named 'record'"):
        rlm.Session(functions=[record, record])
    with pytest.raises(rlm.ConfigError, match="not a named function"):
        rlm.Session(functions=[lambda: 1])


async def test_an_interrupted_call_cancels_the_host_function_while_the_cell_goes_on(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    host = never_returning()
    code = (
        "try:\n    await asyncio.wait_for(forever(), 1)\nexcept asyncio.TimeoutError:\n"
        "    print('timed out;', 'cancelled:', await was_cancelled())"
    )
    model.script(reply(None, ipython(code)), reply("done"), match="root")
    assert await rlm.run("root task", functions=[host.forever, host.was_cancelled]) == "done"
    assert tool_results(model.requests_for("root")) == ["timed out; cancelled: True"]
    assert host.started.is_set()
    (root,) = sessions(rlm_env)
    assert [(c["name"], c.get("error")) for c in lines(root)] == [
        ("forever", "cancelled"),
        ("was_cancelled", None),
    ]
    for path in (p for p in root.rglob("*") if p.is_file()):  # the key never reaches a log
        assert "sk-test-secret-key" not in path.read_text(errors="replace"), path


TOOLS_FILE = '''
import os

__all__ = ["whoami"]


def whoami(greeting: str) -> dict:
    """Say which process runs this function."""
    return {"greeting": greeting, "pid": os.getpid()}
'''


def test_the_cli_loads_functions_from_a_file_and_refuses_a_bad_spec_in_one_line(
    model: ScriptedModel, rlm_env: Path
) -> None:
    Path("tools.py").write_text(TOOLS_FILE)
    code = "import os, json\nr = await whoami('hi')\nprint(json.dumps([r, os.getpid()]))"
    model.script(reply(None, ipython(code)), reply("done"), match="task")
    result = run_cli("-q", "--functions", "tools.py", "task")
    assert result.returncode == 0, result.stderr
    (reported,) = tool_results(model.requests_for("task"))
    seen, kernel_pid = json.loads(reported)
    assert seen["greeting"] == "hi" and seen["pid"] != kernel_pid  # ran outside the kernel
    assert (
        "`await whoami(greeting: str) -> dict`: Say which process runs this function."
        in (model.requests_for("task")[0]["messages"][0]["content"])
    )
    Path("empty.py").write_text("x = 1\n")
    for spec, words in [
        ("missing.py", "no such file"),
        ("empty.py", "neither register() nor __all__"),
        ("no_such_module_here", "no module named"),
    ]:
        bad = run_cli("-q", "--functions", spec, "task")
        assert bad.returncode == 2 and bad.stdout == "", bad
        assert bad.stderr.count("\n") == 1 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
