"""rlm.Session, events, and the CLI's --json / --context / --resume / interactive mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time

import pytest

import rlm
from conftest import read_log, read_meta, sessions
from helpers import run_cli
from rlm.agent import events as ev
from rlm.logs.procs import pid_alive
from scripted_model import ipython, reply, wait


def tools_seen(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_session_keeps_kernel_and_history_across_sends(model, rlm_env):
    model.script(
        reply(None, ipython("df = {'price': [1, 2, 3]}")),
        reply("loaded"),
        reply(None, ipython("print(sum(df['price']))")),
        reply("the sum is 6"),
    )
    async with rlm.Session() as session:
        assert await session.send("load data") == "loaded"
        assert await session.send("now the sum") == "the sum is 6"
        path = session.path
    last = model.requests[-1]["messages"]
    assert [m["content"] for m in last if m["role"] == "user"] == ["load data", "now the sum"]
    assert tools_seen(model.requests[-1]) == ["[no output]", "6"]
    meta = read_meta(path)
    assert meta["turns"] == 4 and meta["status"] == "done" and meta["task"] == "load data"


async def test_cancelling_a_send_rolls_back_and_stops_children(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    release = threading.Event()
    started = threading.Event()

    def child_started(body):
        started.set()
        return wait(release, reply("too late"))

    model.script(
        reply(None, ipython("x = 41")),
        reply("ready"),
        reply(None, ipython("await rlm.run('child: slow')")),
        reply(None, ipython("print(x + 1)")),
        reply("42"),
        match="root",
    )
    model.script(child_started, match="child: slow")
    try:
        async with rlm.Session() as session:
            assert await session.send("root: set up") == "ready"
            turn = asyncio.create_task(session.send("root: spawn a slow child"))
            while not started.is_set():
                await asyncio.sleep(0.02)
            turn.cancel()
            with pytest.raises(asyncio.CancelledError):
                await turn
            assert await session.send("root: use x") == "42"
            path = session.path
    finally:
        release.set()
    final = model.requests_for("root")[-1]["messages"]
    # the cancelled exchange is gone from the live context; no tool call lacks its result
    assert [m["content"] for m in final if m["role"] == "user"] == ["root: set up", "root: use x"]
    calls = [c["id"] for m in final if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    assert calls == [m["tool_call_id"] for m in final if m["role"] == "tool"]
    (child,) = [p for p in path.iterdir() if p.is_dir()]
    assert read_meta(child)["status"] == "cancelled"
    log = read_log(path)
    assert any(line.get("event") == "turn_cancelled" for line in log)
    assert any("spawn a slow child" in str(line.get("content")) for line in log)  # nothing lost


async def test_events_reach_the_root_callback_with_parentage(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    seen: list[ev.Event] = []
    model.script(
        reply(None, ipython("print(await rlm.run('child: go'))")), reply("r"), match="root"
    )
    model.script(
        reply(None, ipython("print(await rlm.run('grandchild: go'))")), reply("c"), match="child:"
    )
    model.script(reply("g"), match="grandchild:")

    def boom(event: ev.Event) -> None:
        seen.append(event)
        raise RuntimeError("a broken observer must not break the run")

    assert await rlm.run("root task", on_event=boom) == "r"
    started = {e.agent_id: e for e in seen if isinstance(e, ev.AgentStarted)}
    assert len(started) == 3
    root_id = next(i for i, e in started.items() if e.parent_id is None)
    child_id = next(i for i, e in started.items() if e.parent_id == root_id)
    grandchild_id = next(i for i, e in started.items() if e.parent_id == child_id)
    assert (started[child_id].depth, started[grandchild_id].depth) == (1, 2)
    assert started[grandchild_id].session_path.endswith(grandchild_id.split("/", 1)[1])
    kinds = {type(e) for e in seen}
    assert {
        ev.ModelRequest,
        ev.ModelResponse,
        ev.ToolStarted,
        ev.ToolFinished,
        ev.ChildSpawned,
        ev.AgentFinished,
    } <= kinds
    spawned = [e for e in seen if isinstance(e, ev.ChildSpawned)]
    assert {(e.agent_id, e.child_id) for e in spawned} == {
        (root_id, child_id),
        (child_id, grandchild_id),
    }
    finished = [e for e in seen if isinstance(e, ev.AgentFinished)]
    assert [e.agent_id for e in finished] == [grandchild_id, child_id, root_id]


_EXIT_FROM_CALLBACK = """
import asyncio, sys, rlm
from rlm.agent import events as ev

def leave(event):
    if isinstance(event, ev.ModelRequest):
        sys.exit(3)

asyncio.run(rlm.run("task", on_event=leave))
"""


def test_sys_exit_in_a_callback_exits_the_script_with_its_code(model, rlm_env):
    """Only ``Exception`` from a callback is ignored; a ``SystemExit`` (or Ctrl-C's
    ``KeyboardInterrupt``) leaves the run as it is, after the agent's log is closed."""
    model.script(reply("never read"))
    result = subprocess.run(
        [sys.executable, "-c", _EXIT_FROM_CALLBACK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert read_meta(sessions(rlm_env)[0])["status"] == "cancelled"


def test_json_output_success_and_failure(model, rlm_env):
    model.script(reply("forty-two", usage=(10, 2)))
    done = run_cli("--json", "answer please")
    assert done.returncode == 0
    record = json.loads(done.stdout)
    assert record["result"] == "forty-two" and record["error"] is None
    assert record["usage"] == {"prompt_tokens": 10, "completion_tokens": 2}
    assert os.path.isdir(record["session"])
    model.script(reply(None, ipython("1")))
    failed = run_cli("--json", "--max-turns", "1", "loop")
    assert failed.returncode == 1
    record = json.loads(failed.stdout)
    assert record["result"] is None and "max" in record["error"].lower()


def test_context_file_good_and_bad(model, rlm_env, tmp_path):
    good = tmp_path / "history.json"
    good.write_text(
        json.dumps(
            [
                {"role": "user", "content": "earlier q"},
                {"role": "assistant", "content": "earlier a"},
            ]
        )
    )
    model.script(reply("continued"))
    assert run_cli("--context", str(good), "continue").stdout.strip() == "continued"
    sent = model.requests[0]["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "earlier q"),
        ("assistant", "earlier a"),
        ("user", "continue"),
    ]
    for bad in ['{"role": "user"}', '[{"role": "system", "content": "x"}]', "[1]", "not json"]:
        path = tmp_path / "bad.json"
        path.write_text(bad)
        result = run_cli("--context", str(path), "x")
        assert result.returncode == 2 and result.stderr.startswith("rlm: --context:")
        assert "Traceback" not in result.stderr
    assert run_cli("--context", str(tmp_path / "missing.json"), "x").returncode == 2


def test_resume_continues_the_log(model, rlm_env):
    model.script(reply(None, ipython("x = 1")), reply("first"))
    assert run_cli("first task").returncode == 0
    (folder,) = sessions(rlm_env)
    before = len(read_log(folder))
    model.script(reply(None, ipython("print('x' in globals())")), reply("second"))
    result = run_cli("--resume", folder.name[:15], "and now more")
    assert result.returncode == 0 and result.stdout.strip() == "second"
    assert sessions(rlm_env) == [folder]  # same folder, appended
    sent = model.requests[-1]["messages"]
    assert [m["role"] for m in sent[:4]] == ["system", "user", "assistant", "tool"]
    assert sent[1]["content"] == "first task"
    resumed_user = [m for m in sent if m["role"] == "user"][-1]["content"]
    assert "resumed in a new kernel" in resumed_user and resumed_user.endswith("and now more")
    assert tools_seen(model.requests[-1])[-1] == "False"
    log = read_log(folder)
    assert len(log) > before and any(line.get("event") == "resumed" for line in log)
    assert read_meta(folder)["status"] == "done"
    missing = run_cli("--resume", "nope", "x")
    assert missing.returncode == 2 and "no session matches 'nope'" in missing.stderr


def test_interactive_through_a_pipe(model, rlm_env):
    model.script(
        reply(None, ipython("v = 'kept'")),
        reply("one"),
        reply(None, ipython("print(v)")),
        reply("two"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "--quiet"],
        input="first\n\n/session\nsecond\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "one" and lines[2] == "two"
    assert lines[1] == str(sessions(rlm_env)[0])
    assert "rlm>" not in result.stdout
    assert tools_seen(model.requests[-1])[-1] == "kept"


#: Terminal output read past the last needle, per pty fd: the next wait starts from it.
_UNREAD: dict[int, str] = {}


def _read_until(fd: int, needle: str, timeout: float = 60) -> str:
    """Terminal output up to and including ``needle``; what came after it stays unread."""
    seen = _UNREAD.pop(fd, "")
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not seen; got {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:
                break
    end = seen.find(needle)
    if end < 0:
        return seen
    end += len(needle)
    _UNREAD[fd] = seen[end:]
    return seen[:end]


def _wait_for_file(path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):  # gone, or a zombie: exited
            return True
        time.sleep(0.02)
    return False


def _quit_with_ctrl_c(pid: int, fd: int, tries: int = 5) -> int:
    """Ctrl-C twice within a second quits. On a loaded machine the first may be handled more
    than a second before the second, or two presses in a row may reach rlm as one SIGINT
    (signals do not queue): press; once rlm asks for the second press, press again at once
    (never wait forever for an exit that will not come, never press during the shutdown)."""
    for _ in range(tries):
        os.write(fd, b"\x03")
        deadline = time.monotonic() + 5
        seen = ""
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:  # drain the terminal so rlm never blocks writing to it
                with contextlib.suppress(OSError):
                    seen += os.read(fd, 65536).decode(errors="replace")
            if "again to quit" in seen:
                break  # handled at the prompt: the next press comes within the second
    raise AssertionError("rlm did not quit on repeated Ctrl-C")


def test_interactive_in_a_terminal_with_ctrl_c(model, rlm_env):
    work = rlm_env.parent / "work"
    spin = (
        "import os, time\nopen('{name}', 'w').write(str(os.getpid()))\nwhile True: time.sleep(0.05)"
    )
    model.script(
        reply("hello there"),
        reply(None, ipython(spin.format(name="first.pid"))),
        reply("after cancel"),
        reply(None, ipython(spin.format(name="second.pid"))),
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes rlm on a pseudo-terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "rlm", "--quiet"], os.environ)
    try:
        _read_until(fd, "rlm> ")
        os.write(fd, b"say hello\r")
        _read_until(fd, "hello there")
        os.write(fd, b"spin forever\r")
        _wait_for_file(work / "first.pid")
        os.write(fd, b"\x03")  # Ctrl-C cancels the turn, back at the prompt
        _read_until(fd, "(cancelled)")
        os.write(fd, b"again\r")
        _read_until(fd, "after cancel")
        os.write(fd, b"spin again\r")
        kernel = int(_wait_for_file(work / "second.pid"))
        os.write(fd, b"\x03")
        _read_until(fd, "^C")  # the terminal echoed the first; the second comes at once
        status = _quit_with_ctrl_c(pid, fd)
        assert os.waitstatus_to_exitcode(status) == 130  # the documented code of Ctrl-C
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        _UNREAD.pop(fd, None)
        os.close(fd)
    assert _gone(kernel)
    assert read_meta(sessions(rlm_env)[0])["status"] == "cancelled"


def test_interactive_multi_line_messages_unknown_commands_and_sigterm(model, rlm_env):
    """A pasted block stays one message with its indentation, a trailing backslash continues
    a line, an unknown /command is refused (not sent)."""
    model.script(reply("got block"), reply("got continued"))
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "rlm", "--quiet"], os.environ)
    try:
        _read_until(fd, "rlm> ")
        os.write(fd, b"/foo bar\r")
        _read_until(fd, "unknown command /foo; /help lists them")
        os.write(fd, b'"""\rdef f():\r    return 1\r"""\r')
        _read_until(fd, "got block")
        os.write(fd, b"first line \\\r  second\r")
        _read_until(fd, "got continued")
        _read_until(fd, "rlm> ")
        os.write(fd, b"/exit\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        _UNREAD.pop(fd, None)
        os.close(fd)
    users = [[m["content"] for m in r["messages"] if m["role"] == "user"] for r in model.requests]
    assert len(model.requests) == 2  # /foo never reached the model
    assert users[0] == ["def f():\n    return 1"]
    assert users[1][-1] == "first line \n  second"
    assert read_meta(sessions(rlm_env)[0])["status"] != "running"


def test_interactive_exits_on_ctrl_d_and_exit(model, rlm_env):
    model.script(reply("only answer"))
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "rlm", "--quiet"], os.environ)
    try:
        _read_until(fd, "rlm> ")
        os.write(fd, b"/help\r")
        _read_until(fd, "/reset")
        os.write(fd, b"hi\r")
        _read_until(fd, "only answer")
        _read_until(fd, "rlm> ")
        os.write(fd, b"\x04")  # Ctrl-D
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        _UNREAD.pop(fd, None)
        os.close(fd)
    assert read_meta(sessions(rlm_env)[0])["status"] == "done"
