"""The orchestrator's rules, end to end: children belong to their cell, children inherit
their parent's settings, a failed start leaves nothing behind, observers may be async, a
cancelled turn leaves the kernel idle, every deliberate error is an ``RLMError``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import rlm
from conftest import read_meta, sessions
from rlm.agent import events as ev
from rlm.config import Settings, load_settings
from rlm.errors import ConfigError, RLMError
from rlm.logs.store import SessionError
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import ipython, reply

pytestmark = pytest.mark.timeout(120)


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def child_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))


async def test_a_child_cannot_outlive_the_cell_that_started_it(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    # The task asks for its child only once the next cell runs: its request names the cell
    # that created it (ended by then), whatever the machine's load.
    start = (
        "import asyncio\ngo = asyncio.Event()\n"
        "async def late():\n    await go.wait()\n    return await rlm.run('child: late')\n"
        "t = asyncio.ensure_future(late())\nprint('started')"
    )
    check = (
        "go.set()\ntry:\n    print('answer:', await t)\n"
        "except BaseException as e:\n    print('failed:', type(e).__name__, e)"
    )
    model.script(
        reply(None, ipython(start)), reply(None, ipython(check)), reply("done"), match="root"
    )
    model.script(reply("late answer"), match="child: late")
    assert await rlm.run("root task", max_turns=5) == "done"
    first, second = tool_results(model.requests_for("root"))
    assert first == "started"
    assert second.startswith("failed: RLMError") and "has ended" in second, second
    (root,) = sessions(rlm_env)
    for child in child_folders(root):  # refused at once, or cancelled with its cell
        assert read_meta(child)["status"] == "cancelled"


async def test_a_child_with_an_override_keeps_its_parents_other_settings(
    model, rlm_env, monkeypatch
):
    # The parent's settings were given explicitly; the environment says otherwise.
    monkeypatch.setenv("RLM_APPEND_TO_SYSTEM_PROMPT", "ENV-ONLY-INSTRUCTION")
    parent = Settings(
        model="scripted",
        base_url=model.base_url,
        max_depth=1,
        home=rlm_env,
        append_to_system_prompt=None,  # explicitly unset: wins over the environment
    )
    code = "print(await rlm.run('child: hi', max_turns=3))"
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    model.script(reply("child says hi"), match="child: hi")
    async with rlm.Session(settings=parent) as session:
        assert await session.send("root task") == "ok"
    assert tool_results(model.requests_for("root")) == ["child says hi"]
    assert "ENV-ONLY" not in model.requests_for("root")[0]["messages"][0]["content"]
    (child_request,) = model.requests_for("child: hi")
    assert "ENV-ONLY-INSTRUCTION" not in child_request["messages"][0]["content"]
    (child,) = child_folders(sessions(rlm_env)[0])
    assert read_meta(child)["settings"]["max_turns"] == 3


async def test_session_with_settings_refuses_unknown_keywords(rlm_env):
    settings = load_settings()
    with pytest.raises(ConfigError, match="bogus"):
        rlm.Session(settings=settings, bogus=1)
    refined = rlm.Session(settings=settings, max_turns=4)
    assert refined.settings.max_turns == 4 and refined.settings.model == settings.model


async def test_a_failed_start_leaves_no_run_dir_and_closes_cleanly(rlm_env, tmp_path, monkeypatch):
    # A run dir path too long for an ipc socket: the control channel cannot bind, after
    # the run dir and the model client already exist.
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    monkeypatch.setenv("TMPDIR", str(deep))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    orchestrator = Orchestrator(load_settings())
    with pytest.raises(ConfigError, match="control socket"):
        await orchestrator.__aenter__()
    assert [p for p in deep.iterdir() if p.name.startswith("rlm-")] == []
    await orchestrator.__aexit__(None, None, None)  # safe after a failed start


async def test_async_event_callbacks_receive_every_event_in_order(model, rlm_env):
    seen: list[str] = []

    async def observe(event: ev.Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.kind)

    model.script(reply(None, ipython("1 + 1")), reply("ok"))
    assert await rlm.run("task", on_event=observe) == "ok"
    assert seen[0] == "AgentStarted" and seen[-1] == "AgentFinished"
    assert "ToolFinished" in seen and seen.index("ToolStarted") < seen.index("ToolFinished")


async def test_cancel_during_the_interrupt_grace_leaves_the_kernel_idle(
    model, rlm_env, tmp_path, monkeypatch
):
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", "10")
    flag = Path.cwd() / "interrupted"  # in the workspace: a sandbox allows it
    stubborn = (
        "import time, pathlib\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n"
        f"        pathlib.Path({str(flag)!r}).touch()\n"
    )
    model.script(reply(None, ipython(stubborn, timeout=1)), match="first")
    model.script(reply(None, ipython("print('alive')", timeout=5)), reply("ok"), match="second")
    async with rlm.Session(model="scripted") as session:
        turn = asyncio.ensure_future(session.send("first"))
        while not flag.exists():  # the timeout's interrupt reached the cell
            await asyncio.sleep(0.05)
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        assert await session.send("second") == "ok"
    assert tool_results(model.requests_for("second")) == ["alive"]


async def test_every_deliberate_error_is_an_rlm_error(rlm_env):
    assert issubclass(SessionError, RLMError)
    session = rlm.Session()
    with pytest.raises(RLMError, match="not open"):
        _ = session.path
    assert {"Session", "Settings", "run", "RLMError"} <= set(dir(rlm))


def test_import_rlm_is_light():
    import subprocess
    import sys

    code = "import sys, rlm; print(sorted(m for m in ('zmq', 'jupyter_client', 'openai') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert out.stdout.strip() == "[]", out.stderr
