"""Persistent sub-agents from a cell: ``rlm.spawn``, ``child.send``, ``child.close``.

Real kernels, the real control channel and real HTTP to the scripted model. A spawned
child's requests are routed by its first message ("counter ..."), so its turns come from one
queue in order.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import rlm
from conftest import read_log, read_meta, sessions
from scripted_model import ScriptedModel, ipython, reply, wait

# The child's three turns: set a variable and write its kernel's pid, then add to it twice.
CHILD_TURNS = [
    reply(None, ipython("import os\nx = 1\nopen('child.pid', 'w').write(str(os.getpid()))")),
    reply("set"),
    reply(None, ipython("x += 1")),
    reply("added"),
    reply(None, ipython("x += 1\nprint('x is', x)")),
    reply("x is 3"),
]

THREE_SENDS = """
import json
child = await rlm.spawn()
answers = [await child.send(f"counter step {i}") for i in (1, 2, 3)]
print(json.dumps({"answers": answers, "path": child.session_path}))
"""

# the root runs the parent (depth 1) and looks at the grandchild's kernel once it has ended
ROOT = """
from rlm.logs.procs import pid_alive
await rlm.run("parent task")
print("grandchild alive:", pid_alive(int(open("child.pid").read())))
"""


def cell_output(folder: Path) -> str:
    (tool,) = [line for line in read_log(folder) if line.get("role") == "tool"]
    return tool["content"]


async def test_a_spawned_child_keeps_its_variables_across_three_sends_and_ends_with_its_parent(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    model.script(reply(None, ipython(ROOT)), reply("root done"), match="root")
    model.script(reply(None, ipython(THREE_SENDS)), reply("parent done"), match="parent")
    model.script(*CHILD_TURNS, match="counter")
    assert await rlm.run("root task") == "root done"
    assert model.errors == []
    (root,) = sessions(rlm_env)
    # gone, kernel and all, as soon as its parent ended (the run was still going)
    assert cell_output(root).strip() == "grandchild alive: False"
    (parent,) = [p for p in root.iterdir() if p.name.startswith("sub-")]
    seen = json.loads(cell_output(parent))
    assert seen["answers"] == ["set", "added", "x is 3"]
    (child,) = [p for p in parent.iterdir() if p.name.startswith("sub-")]
    assert Path(seen["path"]) == child
    # the third turn saw the variable the first one set: one kernel, kept between sends
    third = model.requests_for("counter")[-1]["messages"]
    assert [m["content"] for m in third if m["role"] == "tool"][-1].startswith("x is 3")
    # one history: the child's third request carries the first two turns
    users = [m["content"] for m in third if m["role"] == "user"]
    assert users == ["counter step 1", "counter step 2", "counter step 3"]
    meta = read_meta(child)
    assert meta["status"] == "done" and meta["turns"] == 6 and meta["depth"] == 2
    assert read_meta(parent)["children"] == [{"id": child.name, "task": "", "status": "done"}]
    assert read_meta(root)["usage_total"]["completion_tokens"] > meta["usage"]["completion_tokens"]


async def test_a_child_outlives_the_cell_that_spawned_it_but_a_send_does_not(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    first = (
        "child = await rlm.spawn()\n"
        "orphan = asyncio.ensure_future(child.send('counter never'))"  # left to the cell's end
    )
    second = (
        "try:\n    await orphan\n    print('answered')\n"
        "except BaseException as e:\n    print(repr(e))\n"
        "print(await child.send('counter step 1'))"
    )
    model.script(
        reply(None, ipython(first)), reply(None, ipython(second)), reply("root done"), match="root"
    )
    model.script(*CHILD_TURNS[:2], match="counter step")
    never = threading.Event()  # the orphan's turn, if it got as far as the model, never ends
    model.script(wait(never), match="counter never")
    try:
        assert await rlm.run("root task") == "root done"
    finally:
        never.set()
    assert model.errors == []
    (root,) = sessions(rlm_env)
    outputs = [line["content"] for line in read_log(root) if line.get("role") == "tool"]
    refused, answer = outputs[1].strip().splitlines()
    # refused if its request left after the cell ended, else cancelled with the cell
    assert "cancelled" in refused or "has ended" in refused, refused
    assert answer == "set"  # the child spawned by the first cell answers in the second
    # and the cancelled turn left nothing in the child's history
    users = [m["content"] for m in model.requests_for("counter step")[-1]["messages"]]
    assert not [u for u in users if "counter never" in u]


CLOSE = """
import asyncio, json
from rlm.logs.procs import pid_alive
child = await rlm.spawn("counter start", max_turns=3)
first = child.answer
meta = lambda: json.load(open(child.session_path + "/../meta.json"))["children"][0]["status"]
idle = meta()
both = await asyncio.gather(child.send("counter again"), child.send("counter more"))
pid = int(open("child.pid").read())
alive_before = pid_alive(pid)
await child.close()
await child.close()
try:
    await child.send("counter after close")
    late = "answered"
except rlm.RLMError as e:
    late = str(e)
print(json.dumps({"first": first, "idle": idle, "both": both, "alive_before": alive_before,
                  "alive_after": pid_alive(pid), "late": late, "status": meta()}))
"""


async def test_close_ends_the_child_at_once_and_two_sends_run_one_after_the_other(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(reply(None, ipython(CLOSE)), reply("root done"), match="root")
    model.script(*CHILD_TURNS[:4], match="counter")
    model.script(reply("third"), match="counter")
    assert await rlm.run("root task") == "root done"
    assert model.errors == []
    (root,) = sessions(rlm_env)
    seen = json.loads(cell_output(root))
    assert seen["first"] == "set" and seen["idle"] == "idle"
    # the second send waited for the first: the child's turns did not interleave
    assert seen["both"] == ["added", "third"]
    assert seen["alive_before"] is True and seen["alive_after"] is False
    assert "closed" in seen["late"]
    assert seen["status"] == "done"
    (child,) = [p for p in root.iterdir() if p.name.startswith("sub-")]
    assert read_meta(child)["status"] == "done"


DEPTH = """
results = []
for bypass in (False, True):
    if bypass:  # the kernel's own check only saves a round trip: the limit is the orchestrator's
        rlm.inkernel._state["max_depth"] = 5
    try:
        await rlm.spawn("counter x")
        results.append("spawned")
    except rlm.DepthLimitError as e:
        results.append(f"refused: {e}")
print(results)
"""


async def test_a_spawn_beyond_the_depth_limit_is_refused_without_a_model_call(
    model: ScriptedModel, rlm_env: Path
) -> None:
    model.script(reply(None, ipython(DEPTH)), reply("root done"), match="root")
    assert await rlm.run("root task") == "root done"
    output = cell_output(sessions(rlm_env)[0])
    assert output.count("refused:") == 2, output
    assert "RLM_MAX_DEPTH" in output
    assert len(model.requests) == 2  # the root's two turns only
    assert not [p for p in sessions(rlm_env)[0].iterdir() if p.name.startswith("sub-")]
