"""A child of ``rlm.spawn`` shows as idle between its turns and busy during one, in
``rlm sessions tree`` (read from the logs by another process, as a user would) and in the
live view. Real kernels, the real control channel and the scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import rlm
from conftest import read_log, sessions
from rlm.agent import events as ev
from rlm.cli.live import LiveView
from scripted_model import ScriptedModel, ipython, reply

#: Runs ``rlm sessions tree`` until the spawned child's row shows ``state``; prints the row.
TREE = """
import os, subprocess, sys, time
def child_row(state):
    (session,) = os.listdir(os.path.join(os.environ["RLM_HOME"], "sessions"))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    row = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "rlm", "sessions", "tree", session],
                             capture_output=True, text=True, env=env, timeout=60).stdout
        row = " ".join(next((l for l in out.splitlines() if "sub-" in l), "").split())
        if f" {state} " in row:
            break
        time.sleep(0.05)
    return row
"""

ROOT_CELL = (
    TREE
    + """
child = await rlm.spawn()
idle = child_row("idle")
busy = await child.send("counter look")
print(json.dumps({"idle": idle, "busy": busy}))
"""
)
CHILD_CELL = TREE + '\nprint(child_row("busy"))'


async def test_a_spawned_child_is_idle_between_turns_and_busy_during_one(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(
        reply(None, ipython("import json\n" + ROOT_CELL)), reply("root done"), match="root"
    )
    model.script(reply(None, ipython(CHILD_CELL)), reply("looked"), match="counter")
    view = LiveView(Console(record=True, width=200))
    shown: list[str] = []

    def observe(event: ev.Event) -> None:
        view(event)
        if isinstance(event, ev.TurnFinished) and event.depth == 1:
            view.console.print(view.render())
            shown.append(view.console.export_text())

    assert await rlm.run("root task", on_event=observe) == "root done"
    (root,) = sessions(rlm_env)
    (tool,) = [line["content"] for line in read_log(root) if line.get("role") == "tool"]
    assert tool.startswith("{"), tool
    seen = json.loads(tool)
    assert " idle " in seen["idle"] and "running" not in seen["idle"], seen
    # during its turn the child's own cell saw itself busy
    (child,) = root.glob("sub-*")
    (child_tool,) = [line["content"] for line in read_log(child) if line.get("role") == "tool"]
    assert child.name in child_tool and " busy " in child_tool, child_tool
    # the live view: after the child's turn its line says it waits
    (child_line,) = [line for line in shown[-1].splitlines() if child.name in line]
    assert child_line.rstrip().endswith("· idle"), child_line
