"""An interrupted ``rlm.run`` cancels its sub-agent at once, not when the cell ends.

The kernel side sends a ``cancel_request`` when the coroutine awaiting ``rlm.run`` is
interrupted; the orchestrator cancels that child. A separate rule also cancels what a cell
left running when the cell ends, so the cell here catches the interrupt and keeps running:
only the ``cancel_request`` can end the child while it does.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import rlm
from conftest import read_meta, sessions
from scripted_model import ScriptedModel, ipython, reply, wait

#: How long the interrupted cell goes on watching the child before it reports.
WATCH = 30

WRITE_PID = """
import os
open({tmp!r}, 'w').write(str(os.getpid()))
os.replace({tmp!r}, {path!r})
"""

# The interrupt is a real SIGINT to the kernel process, what a kernel interrupt (a cell
# timeout, Ctrl-C) delivers; it is sent once the child's kernel has run a cell, so the child
# is known to be running. The cell then survives the interrupt and watches the child.
INTERRUPTED_CELL = """
import asyncio, json, os, pathlib, signal, threading, time
pidfile = pathlib.Path({pidfile!r})

def interrupt_once_the_child_runs():
    while not pidfile.exists():
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt_once_the_child_runs, daemon=True).start()
try:
    await rlm.run('child: slow')
    caught = None
except BaseException as exc:
    caught = type(exc).__name__

def alive(pid):
    try:
        stat = open(f'/proc/{{pid}}/stat').read()
    except OSError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] != 'Z'

pid = int(pidfile.read_text())
status = None
deadline = time.monotonic() + {watch}
while time.monotonic() < deadline:
    metas = list(pathlib.Path({home!r}).glob('sessions/*/sub-*/meta.json'))
    status = json.loads(metas[0].read_text())['status'] if metas else None
    if status == 'cancelled' and not alive(pid):
        break
    time.sleep(0.05)
print(json.dumps({{'caught': caught, 'child': status, 'child_kernel_alive': alive(pid)}}))
"""


async def test_an_interrupted_rlm_run_cancels_the_child_while_the_cell_goes_on(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", str(WATCH + 30))
    pidfile = Path.cwd() / "child-kernel.pid"  # in the workspace: a sandbox allows it
    release = threading.Event()
    cell = INTERRUPTED_CELL.format(pidfile=str(pidfile), home=str(rlm_env), watch=WATCH)
    model.script(reply(None, ipython(cell)), reply("root done"), match="root")
    write_pid = WRITE_PID.format(tmp=f"{pidfile}.tmp", path=str(pidfile))
    model.script(
        reply(None, ipython(write_pid)),
        wait(release, timeout=WATCH + 30),  # the child then waits on its model
        match="child: slow",
    )
    try:
        assert await rlm.run("root task") == "root done"
    finally:
        release.set()
    (report,) = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    seen = json.loads(report)
    assert seen["caught"] in ("KeyboardInterrupt", "CancelledError"), seen
    # while the interrupted cell was still running:
    assert seen["child"] == "cancelled", seen
    assert seen["child_kernel_alive"] is False, seen
    (root,) = sessions(rlm_env)
    (child,) = root.glob("sub-*")
    assert read_meta(child)["status"] == "cancelled"
    assert read_meta(root)["children"][0]["status"] == "cancelled"


async def test_a_cell_timeout_interrupts_a_cell_awaiting_rlm_run(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell waiting on a sub-agent that does not answer is interrupted at its timeout and
    the kernel keeps its state; it is not restarted as if the cell ignored the interrupt.
    (ipykernel turns SIGINT into a cancellation through a callback that, scheduled from the
    signal handler, only runs when the kernel's event loop next wakes up.)"""
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    release = threading.Event()
    code = "kept = 42\nawait rlm.run('child: stuck')"
    model.script(
        reply(None, ipython(code, timeout=3)),
        reply(None, ipython("print(kept)")),
        reply("root done"),
        match="root",
    )
    model.script(wait(release, timeout=60), match="child: stuck")
    try:
        assert await rlm.run("root task") == "root done"
    finally:
        release.set()
    interrupted, after = [
        m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"
    ]
    assert "timed out after 3 s: execution interrupted, kernel state kept" in interrupted
    assert after == "42"
    (root,) = sessions(rlm_env)
    (child,) = root.glob("sub-*")
    assert read_meta(child)["status"] == "cancelled"
