"""``rlm sessions``: list, tree, show and export over session trees made by real runs.

The sessions are made once per module by real runs (real kernels, the scripted model over
HTTP): a depth-2 tree with a child that fails (max_turns) and a summarize drop, a run with a
context window, a nudge and a summary, and a copy of it that looks killed (status running,
dead pid, a cut-off last line).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

import rlm
from rlm.cli.main import main as cli_main
from scripted_model import ScriptedModel, call, ipython, reply

ROOT_TASK = "root task: analyse"
CHILD_TASK = "child: ask below"
GRANDCHILD_TASK = "grandchild: leaf"
DOOMED_TASK = "child: doomed"
WINDOW_TASK = "window task"
PRIOR = [
    {"role": "user", "content": "multi: what is 2 + 2?"},
    {"role": "assistant", "content": "4"},
]
MULTI = "multi: what is 2 + 2?"  # routing key of the multi-turn session (its first user message)
SUMMARY = "turn 1 printed hello, then raised ZeroDivisionError"
DOOMED_CODE = (
    "try:\n"
    f"    await rlm.run({DOOMED_TASK!r}, max_turns=1, tools=['summarize'])\n"
    "except rlm.AgentError as e:\n"
    "    print('failed:', e.reason)"
)


@dataclass
class Built:
    home: Path
    tree: Path
    """The depth-2 session: root, child (+ grandchild), doomed child."""
    window: Path
    interrupted: Path
    multi: Path
    """A multi-turn rlm.Session with prior context, resumed for a third message."""
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Request bodies the scripted model received, per task."""


def _script(model: ScriptedModel) -> None:
    model.script(
        reply("Let me look.", ipython("print('hello')\n1/0")),
        reply(None, ipython(f"print(await rlm.run({CHILD_TASK!r}))")),
        reply(None, ipython(DOOMED_CODE)),
        reply(None, call("summarize", {"num_turns": 1, "summary": SUMMARY})),
        reply("root ok"),
        match=ROOT_TASK,
    )
    model.script(
        reply(None, ipython(f"print(await rlm.run({GRANDCHILD_TASK!r}, tools=['summarize']))")),
        reply("child relays"),
        match=CHILD_TASK,
    )
    model.script(reply("leaf answer", usage=(100, 20)), match=GRANDCHILD_TASK)
    model.script(
        reply(None, call("summarize", {"num_turns": 1, "summary": "nothing yet"})),
        match=DOOMED_TASK,
    )
    model.script(
        reply("thinking", call("summarize", {"num_turns": 5, "summary": "too many"})),
        reply(None, call("summarize", {"num_turns": 5, "summary": "still too many"})),
        reply(None, call("summarize", {"num_turns": 1, "summary": "dropping one"})),
        reply(""),  # neither text nor a tool call: the agent nudges
        reply("window answer"),
        match=WINDOW_TASK,
    )
    model.script(
        reply(None, call("summarize", {"num_turns": 3, "summary": "nothing"})),
        reply("answer one"),
        reply("answer two"),
        reply("answer three"),
        match=MULTI,
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def build_sessions(base: Path) -> Built:
    """Run the scripted sessions into ``base/home`` (environment restored afterwards)."""
    home, work = base / "home", base / "work"
    work.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp, ScriptedModel() as model:
        for key in list(os.environ):
            if key.startswith("RLM_"):
                mp.delenv(key)
        for key, value in {
            "RLM_BASE_URL": model.base_url,
            "RLM_API_KEY": "sk-test-secret-key",
            "RLM_MODEL": "scripted",
            "RLM_HOME": str(home),
            "RLM_SDK_MAX_RETRIES": "0",
            "RLM_RETRY_MAX_WAIT": "0.05",
            "RLM_EXEC_TIMEOUT": "30",
            "RLM_MAX_DEPTH": "2",
        }.items():
            mp.setenv(key, value)
        mp.chdir(work)
        _script(model)

        async def run_all() -> None:
            assert await rlm.run(ROOT_TASK) == "root ok"
            answer = await rlm.run(WINDOW_TASK, tools=["summarize"], max_turns_in_context=2)
            assert answer == "window answer"
            async with rlm.Session(tools=["summarize"], context=PRIOR) as session:
                assert await session.send("first message") == "answer one"
                assert await session.send("second message") == "answer two"
                session_id = session.id
            async with rlm.Session(tools=["summarize"], resume=session_id) as session:
                assert await session.send("third message") == "answer three"

        asyncio.run(run_all())
        assert not model.errors, model.errors
        requests = {
            task: model.requests_for(task)
            for task in (ROOT_TASK, CHILD_TASK, GRANDCHILD_TASK, DOOMED_TASK, WINDOW_TASK, MULTI)
        }
    # in start order (ids sort by second only)
    tree, window, multi = sorted(
        (home / "sessions").iterdir(), key=lambda p: meta_of(p)["started_at"]
    )
    # A copy of the window session that looks killed mid-run.
    interrupted = home / "sessions" / "20991231-235959-dead00"
    shutil.copytree(window, interrupted)
    meta = json.loads((interrupted / "meta.json").read_text())
    meta.update(
        id=interrupted.name,
        status="running",
        pid=_dead_pid(),
        ended_at=None,
        stop_reason=None,
        started_at="2099-12-31T23:59:59.000000+00:00",
    )
    (interrupted / "meta.json").write_text(json.dumps(meta, indent=2))
    with open(interrupted / "messages.jsonl", "a") as handle:
        handle.write('{"role": "assistant", "content": "cut off mid-wri')
    return Built(home, tree, window, interrupted, multi, requests)


def _hashes(home: Path) -> dict[str, str]:
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = build_sessions(tmp_path_factory.mktemp("sessions"))
    before = _hashes(data.home)
    yield data
    assert _hashes(data.home) == before, "rlm sessions modified the logs"


@pytest.fixture
def sessions(built: Built, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``rlm sessions ARGS`` in-process: returns (exit code, stdout, stderr)."""
    monkeypatch.delenv("RLM_PRICES", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)

    def run(*args: str, home: bool = True) -> tuple[int, str, str]:
        argv = ["sessions", *args] + (["--home", str(built.home)] if home else [])
        code = cli_main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def child_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))


def meta_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def by_task(folder: Path, task: str) -> Path:
    (found,) = [p for p in folder.rglob("meta.json") if meta_of(p.parent)["task"] == task]
    return found.parent


# -- list and tree ---------------------------------------------------------------------------


def test_list_newest_first_with_status_usage_and_children(built: Built, sessions):
    code, out, err = sessions("list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:8] == [
        "id",
        "started",
        "status",
        "model",
        "turns",
        "tokens",
        "total",
        "children",
    ]
    assert header[-1] == "task" and "cost" not in header
    rows = {line.split()[0]: line for line in lines if line.startswith(("20", "2099"))}
    order = [line.split()[0] for line in lines if line.split() and line.split()[0] in rows]
    assert order == [built.interrupted.name, built.multi.name, built.window.name, built.tree.name]
    tree_row = rows[built.tree.name].split()
    meta = meta_of(built.tree)
    assert "done" in tree_row and "scripted" in tree_row and ROOT_TASK in rows[built.tree.name]
    assert tree_row[tree_row.index("scripted") + 1] == "5"  # turns
    own, total = meta["usage"], meta["usage_total"]
    assert f"{own['prompt_tokens']:,}/{own['completion_tokens']}" in tree_row
    assert f"{total['prompt_tokens']:,}/{total['completion_tokens']}" in tree_row
    assert tree_row[tree_row.index("scripted") + 4] == "2"  # direct children
    assert "interrupted" in rows[built.interrupted.name].split()
    assert "done" in rows[built.window.name].split()


def test_list_cost_column_from_rlm_prices(built: Built, sessions, monkeypatch, tmp_path):
    prices = {"scripted": {"prompt": 1000.0, "completion": 2000.0}}
    monkeypatch.setenv("RLM_PRICES", json.dumps(prices))
    code, out, _ = sessions("list")
    assert code == 0 and "cost" in out.splitlines()[0].split()
    total = meta_of(built.tree)["usage_total"]
    dollars = (total["prompt_tokens"] * 1000 + total["completion_tokens"] * 2000) / 1e6
    row = next(line for line in out.splitlines() if line.startswith(built.tree.name))
    assert f"${dollars:.4f}" in row or f"${dollars:,.2f}" in row
    # a path to a JSON file works too; a bad table is a one-line usage error
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    monkeypatch.setenv("RLM_PRICES", str(path))
    assert sessions("list")[0] == 0
    monkeypatch.setenv("RLM_PRICES", '{"scripted": {"prompt": "cheap"}}')
    code, out, err = sessions("list")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "RLM_PRICES" in err


def test_tree_shows_every_agent_with_status_turns_tokens_duration(built: Built, sessions):
    code, out, _ = sessions("tree", built.tree.name[:-2])  # a unique prefix
    assert code == 0
    child = by_task(built.tree, CHILD_TASK)
    grandchild = by_task(built.tree, GRANDCHILD_TASK)
    doomed = by_task(built.tree, DOOMED_TASK)
    lines = out.splitlines()
    root_line = next(line for line in lines if built.tree.name in line)
    assert "done" in root_line and ROOT_TASK in root_line
    child_line = next(line for line in lines if child.name in line)
    assert "├── " + child.name in child_line and "done" in child_line
    grand_line = next(line for line in lines if grandchild.name in line)
    assert "│   └── " + grandchild.name in grand_line
    assert "100/20" in grand_line  # usage (own and total) of the leaf
    assert lines.index(child_line) < lines.index(grand_line)
    doomed_line = next(line for line in lines if doomed.name in line)
    assert "└── " + doomed.name in doomed_line and "error: max_turns" in doomed_line
    assert lines.index(grand_line) < lines.index(doomed_line)  # start order
    assert " 1 " in doomed_line  # one turn
    assert all(line.split()[-1] for line in (root_line, child_line))
    assert any(token.endswith("s") and token[0].isdigit() for token in root_line.split())


def test_tree_with_prices_has_own_and_total_cost(built: Built, sessions, monkeypatch):
    monkeypatch.setenv("RLM_PRICES", '{"scripted": {"prompt": 1000000, "completion": 0}}')
    code, out, _ = sessions("tree", built.tree.name)
    assert code == 0
    header = out.splitlines()[0]
    assert "cost" in header and "total cost" in header
    grand_line = next(line for line in out.splitlines() if "grandchild" in line)
    assert grand_line.count("$100.00") == 2  # 100 prompt tokens at $1 each, own == total


def test_unknown_or_ambiguous_id_and_bad_usage_exit_2(built: Built, sessions):
    for args in (("tree", "nope"), ("show", "nope"), ("export", "nope", "--format", "jsonl")):
        code, out, err = sessions(*args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert "no session matches 'nope'" in err
    code, _, err = sessions("tree", "20")  # all three ids start with "20"
    assert code == 2 and "ambiguous" in err and len(err.strip().splitlines()) == 1
    code, _, err = sessions("show", built.tree.name, "--agent", "sub-zzz")
    assert code == 2 and "no agent matches 'sub-zzz'" in err
    code, _, err = sessions("export", built.tree.name, "--format", "pdf")
    assert code == 2 and "invalid choice" in err and len(err.strip().splitlines()) == 1
    code, _, err = sessions("frobnicate")
    assert code == 2
    assert sessions("--help", home=False)[0] == 0


def test_home_defaults_to_rlm_home_despite_unrelated_bad_settings(built, sessions, monkeypatch):
    monkeypatch.setenv("RLM_HOME", str(built.home))
    monkeypatch.setenv("RLM_MAX_TURNS", "not-a-number")
    code, out, _ = sessions("list", home=False)
    assert code == 0 and built.tree.name in out
    code, out, _ = sessions(home=False)  # no command: list
    assert code == 0 and built.tree.name in out


# -- show ------------------------------------------------------------------------------------


def test_show_renders_text_calls_outputs_spawns_and_events(built: Built, sessions):
    code, out, _ = sessions("show", built.tree.name[:-2])
    assert code == 0
    child = by_task(built.tree, CHILD_TASK)
    doomed = by_task(built.tree, DOOMED_TASK)
    assert f"agent {built.tree.name}" in out
    assert "system  (" in out and "--system shows it" in out
    assert ROOT_TASK in out and "Let me look." in out
    assert "▶ ipython" in out and "    print('hello')\n    1/0" in out
    assert "ZeroDivisionError" in out and "hello" in out
    assert f"print(await rlm.run({CHILD_TASK!r}))" in out
    assert f"↳ spawned {child.name} (done" in out and f"↳ spawned {doomed.name} (error" in out
    # the spawn marker follows the result of the call that spawned it
    assert out.index("child relays") < out.index(f"↳ spawned {child.name}")
    assert out.index(f"↳ spawned {child.name}") < out.index("failed: max_turns")
    assert "failed: max_turns" in out and "▶ summarize" in out and SUMMARY in out
    assert "✂ summarize: turns 1-1 left the context" in out
    assert "turn 5" in out and "root ok" in out and "✓ done" in out
    assert "\x1b[" not in out  # no colour when captured


def test_show_agent_paths_prefixes_system_and_color(built: Built, sessions):
    child = by_task(built.tree, CHILD_TASK)
    grandchild = by_task(built.tree, GRANDCHILD_TASK)
    doomed = by_task(built.tree, DOOMED_TASK)
    rel = f"{child.name[:6]}/{grandchild.name[4:8]}"  # prefixes, one without "sub-"
    code, out, _ = sessions("show", built.tree.name, "--agent", rel)
    assert code == 0 and f"agent {built.tree.name}/{child.name}/{grandchild.name}" in out
    assert GRANDCHILD_TASK in out and "leaf answer" in out
    assert f"spawned by {built.tree.name}/{child.name}" in out
    code, out2, _ = sessions("show", f"{built.tree.name}/{child.name}/{grandchild.name}")
    assert code == 0 and out2 == out
    code, out, _ = sessions("show", built.tree.name, "--agent", doomed.name)
    assert code == 0 and "✗ error (max_turns)" in out and "stopped after 1 turn without" in out
    assert "Error: cannot drop 1 turns" in out
    code, out, _ = sessions("show", built.tree.name, "--system")
    assert code == 0 and "You are an autonomous agent" in out
    assert "You are an autonomous agent" not in sessions("show", built.tree.name)[1]
    code, out, _ = sessions("show", built.tree.name, "--color", "always")
    assert code == 0 and "\x1b[" in out


def test_show_raw_prints_the_jsonl_lines(built: Built, sessions):
    code, out, err = sessions("show", built.tree.name, "--raw")
    assert code == 0 and err == ""
    assert out == (built.tree / "messages.jsonl").read_text()
    code, out, err = sessions("show", built.interrupted.name, "--raw")
    lines = out.splitlines()
    assert all(json.loads(line) for line in lines) and "cut off" not in out
    assert len(lines) == len((built.window / "messages.jsonl").read_text().splitlines())
    assert "skipped 1 unreadable line" in err


def test_show_window_nudge_and_interrupted(built: Built, sessions):
    code, out, _ = sessions("show", built.window.name)
    assert code == 0
    assert "✂ context window: 1 oldest turn(s) dropped, 2 kept" in out
    assert "Your last reply had neither text nor a tool call" in out
    assert "[context turns: 2/2]" in out and "window answer" in out
    code, out, _ = sessions("show", built.interrupted.name)
    assert code == 0 and "⚠ interrupted" in out and "is gone" in out
    assert "1 unreadable line(s) of messages.jsonl skipped" in out


# -- notebooks -------------------------------------------------------------------------------


def _notebooks(out_dir: Path) -> dict[str, Any]:
    return {p.name: nbformat.read(str(p), as_version=4) for p in sorted(out_dir.glob("*.ipynb"))}


def test_export_ipynb_one_valid_notebook_per_agent_with_links(built: Built, sessions, tmp_path):
    out_dir = tmp_path / "nb"
    code, out, _ = sessions("export", built.tree.name[:-2], "--format", "ipynb", "-o", str(out_dir))
    assert code == 0
    child = by_task(built.tree, CHILD_TASK)
    grandchild = by_task(built.tree, GRANDCHILD_TASK)
    doomed = by_task(built.tree, DOOMED_TASK)
    sid = built.tree.name
    names = {
        "root": f"{sid}.ipynb",
        "child": f"{sid}__{child.name}.ipynb",
        "grandchild": f"{sid}__{child.name}__{grandchild.name}.ipynb",
        "doomed": f"{sid}__{doomed.name}.ipynb",
    }
    notebooks = _notebooks(out_dir)
    assert set(notebooks) == set(names.values())
    assert sorted(out.split()) == sorted(str(out_dir / n) for n in names.values())
    for notebook in notebooks.values():
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"

    root = notebooks[names["root"]]
    first = root.cells[0]
    assert first.cell_type == "markdown" and ROOT_TASK in first.source
    assert any(c.cell_type == "markdown" and c.source == "Let me look." for c in root.cells)
    code_cells = [c for c in root.cells if c.cell_type == "code"]
    assert code_cells.pop(0).metadata["rlm"] == {"kind": "setup"}
    assert [c.source for c in code_cells] == [
        "print('hello')\n1/0",
        f"print(await rlm.run({CHILD_TASK!r}))",
        DOOMED_CODE,
    ]
    assert [c.execution_count for c in code_cells] == [1, 2, 3]
    stream, error = code_cells[0].outputs
    assert stream.output_type == "stream" and stream.text == "hello\n"
    assert error.output_type == "error" and error.ename == "ZeroDivisionError"
    assert error.evalue == "division by zero"
    # the kernel's own traceback, colours (ANSI) included, as Jupyter shows it
    assert any("1/0" in re.sub(r"\x1b\[[0-9;]*m", "", line) for line in error.traceback)
    assert code_cells[1].outputs[0].text == "child relays\n"
    assert code_cells[2].outputs[0].text == "failed: max_turns\n"
    # each child is linked from the markdown cell right after the cell that spawned it
    for spawner, who in ((code_cells[1], "child"), (code_cells[2], "doomed")):
        link = root.cells[root.cells.index(spawner) + 1]
        assert link.cell_type == "markdown" and f"]({names[who]})" in link.source
        assert "↳ spawned" in link.source
    summarize = next(c for c in root.cells if "**summarize**" in c.source)
    assert SUMMARY in summarize.source and "Dropped turns 1-1" in summarize.source
    assert "✓ done" in root.cells[-1].source

    child_nb = notebooks[names["child"]]
    assert f"]({names['root']})" in child_nb.cells[0].source  # link back to the parent
    setup, spawner = [c for c in child_nb.cells if c.cell_type == "code"]
    assert setup.metadata["rlm"] == {"kind": "setup"}
    link = child_nb.cells[child_nb.cells.index(spawner) + 1]
    assert f"]({names['grandchild']})" in link.source
    doomed_nb = notebooks[names["doomed"]]
    assert "max_turns" in doomed_nb.cells[-1].source
    assert doomed_nb.metadata.rlm.status == "error"


def test_export_ipynb_of_a_subtree_and_refuses_only_done(built: Built, sessions, tmp_path):
    child = by_task(built.tree, CHILD_TASK)
    code, out, _ = sessions(
        "export", built.tree.name, "--agent", child.name, "--format", "ipynb", "-o", str(tmp_path)
    )
    assert code == 0 and len(out.split()) == 2
    code, _, err = sessions("export", built.tree.name, "--format", "ipynb", "--only-done")
    assert code == 2 and "--only-done" in err
    code, _, err = sessions(
        "export", built.tree.name, "--format", "ipynb", "-o", str(built.home / "sessions" / "x")
    )
    assert code == 2 and "refusing" in err


# -- training records ------------------------------------------------------------------------


def _records(sessions, *args: str) -> list[dict[str, Any]]:
    code, out, _ = sessions("export", *args, "--format", "jsonl")
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_jsonl_messages_equal_the_last_request_plus_the_answer(built: Built, sessions):
    (record,) = _records(sessions, built.tree.name)
    last = built.requests[ROOT_TASK][-1]
    assert record["messages"][:-1] == last["messages"]
    assert record["messages"][-1] == {"role": "assistant", "content": "root ok"}
    assert record["tools"] == last["tools"]
    # the summarize drop is applied: turn 1 (print hello, 1/0) is gone, a summary took its place
    assert not any("1/0" in json.dumps(m) for m in record["messages"])
    assert any(SUMMARY in str(m.get("content")) for m in record["messages"])
    assert all(
        set(m) <= {"role", "content", "tool_calls", "tool_call_id"} for m in record["messages"]
    )
    meta = meta_of(built.tree)
    assert record["metadata"] == {
        "session_id": built.tree.name,
        "agent_id": built.tree.name,
        "depth": 0,
        "parent": None,
        "model": "scripted",
        "status": "done",
        "stop_reason": "answer",
        "turns": 5,
        "usage": meta["usage"],
    }


def test_jsonl_tree_and_only_done(built: Built, sessions, tmp_path):
    path = tmp_path / "out" / "train.jsonl"
    code, _, err = sessions(
        "export", built.tree.name, "--format", "jsonl", "--tree", "-o", str(path)
    )
    assert code == 0 and "wrote 4 record(s)" in err
    records = [json.loads(line) for line in path.read_text().splitlines()]
    tasks = [ROOT_TASK, CHILD_TASK, GRANDCHILD_TASK, DOOMED_TASK]
    by_id = {r["metadata"]["agent_id"]: r for r in records}
    assert len(by_id) == 4
    for task in tasks:
        folder = by_task(built.tree, task)
        agent_id = meta_of(folder)["id"]
        record = by_id[agent_id]
        last = built.requests[task][-1]
        assert record["messages"][:-1] == last["messages"], task
        assert record["tools"] == last["tools"], task
        assert record["metadata"]["depth"] == meta_of(folder)["depth"]
        assert record["metadata"]["parent"] == meta_of(folder)["parent"]
    doomed = by_id[meta_of(by_task(built.tree, DOOMED_TASK))["id"]]
    assert doomed["metadata"]["status"] == "error"
    assert doomed["metadata"]["stop_reason"] == "max_turns"
    assert doomed["messages"][-1]["tool_calls"][0]["function"]["name"] == "summarize"
    assert [t["function"]["name"] for t in doomed["tools"]] == ["summarize"]
    done = _records(sessions, built.tree.name, "--tree", "--only-done")
    assert len(done) == 3 and all(r["metadata"]["status"] == "done" for r in done)


def test_jsonl_window_summary_and_nudge_round_trip(built: Built, sessions):
    (record,) = _records(sessions, built.window.name)
    last = built.requests[WINDOW_TASK][-1]
    assert record["messages"][:-1] == last["messages"]
    assert record["messages"][-1] == {"role": "assistant", "content": "window answer"}
    note = record["messages"][2]["content"]
    assert note.startswith("Summary of earlier turns") and "[turns 2-2] dropping one" in note
    assert "[1 older turn(s) were dropped from your context automatically" in note
    # the interrupted copy still exports (its cut-off last line is skipped), not when only-done
    (record,) = _records(sessions, built.interrupted.name)
    assert record["metadata"]["status"] == "interrupted"
    assert record["messages"][:-1] == last["messages"]
    assert _records(sessions, built.interrupted.name, "--only-done") == []


def test_subprocess_entry_point(built: Built):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlm",
            "sessions",
            "tree",
            built.tree.name[:-2],  # a prefix
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RLM_PRICES": "", "RLM_HOME": str(built.home)},
    )
    assert proc.returncode == 0, proc.stderr
    assert built.tree.name in proc.stdout and "grandchild" not in proc.stderr


def test_running_half_written_and_stale_meta_sessions(built: Built, sessions, tmp_path):
    home = tmp_path / "home"
    root = home / "sessions"
    # still running: the orchestrator's pid (this process) is alive
    running = root / "20300101-000000-aaaaaa"
    shutil.copytree(built.window, running)
    meta = meta_of(running)
    meta.update(id=running.name, status="running", pid=os.getpid(), ended_at=None)
    (running / "meta.json").write_text(json.dumps(meta))
    # a folder whose meta.json is not written yet
    (root / "20300101-000001-bbbbbb").mkdir()
    (root / "20300101-000001-bbbbbb" / "messages.jsonl").write_text("")
    # the parent's meta does not list its children yet (killed before it was rewritten)
    stale = root / "20300101-000002-cccccc"
    shutil.copytree(built.tree, stale)
    meta = meta_of(stale)
    meta.update(id=stale.name, children=[])
    (stale / "meta.json").write_text(json.dumps(meta))

    code, out, err = sessions("list", "--home", str(home), home=False)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert set(rows) == {running.name, stale.name, "20300101-000001-bbbbbb"}
    assert "running" in rows[running.name].split()
    assert "unknown" in rows["20300101-000001-bbbbbb"].split()
    code, out, _ = sessions("tree", running.name, "--home", str(home), home=False)
    assert code == 0 and "running" in out and "…" in out  # duration so far
    code, out, _ = sessions("tree", stale.name, "--home", str(home), home=False)
    children = [line.split("── ")[1].split()[0] for line in out.splitlines() if "── sub-" in line]
    expected = [by_task(built.tree, t).name for t in (CHILD_TASK, GRANDCHILD_TASK, DOOMED_TASK)]
    assert children == expected  # folder scan, in start order
    code, out, _ = sessions("show", "20300101-000001", "--home", str(home), home=False)
    assert code == 0 and "unknown" in out
    code, out, _ = sessions(
        "export", "20300101-000001", "--format", "jsonl", "--home", str(home), home=False
    )
    assert code == 0 and out == ""


def test_rebuild_skips_cancelled_turns_and_keeps_later_exchanges():
    from rlm.logs.replay import last_request

    def tool_call(call_id: str) -> dict[str, Any]:
        function = {"name": "ipython", "arguments": '{"code": "1"}'}
        return {"id": call_id, "type": "function", "function": function}

    system = {"role": "system", "content": "sys"}
    first = [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
        {"role": "assistant", "content": "answer one"},
    ]
    cancelled = [
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("c2")]},
    ]
    third = [{"role": "user", "content": "third"}]
    final = {"role": "assistant", "content": "answer three"}
    records = [
        system,
        *first,
        *cancelled,
        {"event": "turn_cancelled", "discard_lines": 2},
        *third,
        {**final, "usage": {"prompt_tokens": 1, "completion_tokens": 1}, "timestamp": "x"},
    ]
    replay = last_request(records, {"task": "task", "settings": {}})
    assert replay.last_request == [system, *first, *third]
    assert replay.last_reply == final


def test_multi_turn_resumed_session(built: Built, sessions, tmp_path):
    code, out, _ = sessions("list")
    row = next(line for line in out.splitlines() if line.startswith(built.multi.name))
    assert "first message" in row and "done" in row.split()
    code, out, _ = sessions("show", built.multi.name)
    assert code == 0
    assert out.count("prior context: ") == 2 and "prior context: assistant" in out
    for text in ("first message", "answer one", "second message", "answer two", "answer three"):
        assert text in out
    assert "⟲ resumed" in out and "was resumed in a new kernel" in out
    assert "turn 4" in out and "turn 5" not in out  # prior context is not a turn
    (record,) = _records(sessions, built.multi.name)
    last = built.requests[MULTI][-1]
    assert record["messages"][:-1] == last["messages"]
    assert record["messages"][-1] == {"role": "assistant", "content": "answer three"}
    assert record["messages"][1:3] == PRIOR
    code, _, _ = sessions("export", built.multi.name, "--format", "ipynb", "-o", str(tmp_path))
    (notebook,) = _notebooks(tmp_path).values()
    sources = [cell.source for cell in notebook.cells]
    assert "first message" in sources[0]  # the task cell
    assert any(s.startswith("**Prior context (assistant):**") for s in sources)
    assert any(s == "**User:**\n\nsecond message" for s in sources)
    assert any("resumed in a new kernel" in s for s in sources)
