"""Process-side faults: rlm is signalled or killed mid-run, or many agents log at once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from faultkit import (
    API_KEY,
    alive,
    assert_gone,
    check_logs,
    descendants,
    files_containing,
    finish,
    read_jsonl,
    read_pid,
    rlm_process,
    session_folders,
    tool_results,
    wait_until,
    write_pid_code,
)

from conftest import read_meta, sessions
from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import call, ipython, reply, wait

# -- signals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "exit_code", "busy"),
    [
        (signal.SIGTERM, 143, "cell"),  # a cell is running
        (signal.SIGINT, 130, "model"),  # the model is thinking
        (signal.SIGTERM, 143, "model"),
    ],
    ids=["SIGTERM-in-cell", "SIGINT-in-model-call", "SIGTERM-in-model-call"],
)
def test_signal_cancels_the_run_cleanly(model, rlm_env, tmp_path, signum, exit_code, busy):
    pid_file = tmp_path / "kernel.pid"
    release = threading.Event()
    if busy == "cell":
        cell = write_pid_code(pid_file) + "x = 1\nimport time\ntime.sleep(60)"
        model.script(reply(None, ipython(cell)), reply("never"))
    else:
        model.script(reply(None, ipython(write_pid_code(pid_file))), wait(release, reply("never")))
    proc = rlm_process("a long task")
    try:
        started = wait_until(
            lambda: (
                proc.poll() is not None
                or (read_pid(pid_file) is not None and (busy == "cell" or len(model.requests) == 2))
            ),
            60,
        )
        assert started and proc.poll() is None, "rlm did not get going"
        (folder,) = sessions(rlm_env)
        assert read_meta(folder)["status"] == "running"
        kernel = read_pid(pid_file)
        assert kernel is not None and alive(kernel)
        proc.send_signal(signum)
        out, err = finish(proc, 30)
    finally:
        release.set()

    assert proc.returncode == exit_code, err
    assert out == ""
    assert "Traceback" not in err, err
    assert "cancelled" in err.splitlines()[-1], err  # the user is told how it ended
    meta = read_meta(folder)
    assert meta["status"] == "cancelled" and meta["stop_reason"] == "cancelled"
    assert "ended_at" in meta
    assert_gone([kernel], timeout=5)
    records = read_jsonl(folder / "messages.jsonl")
    assert [r["role"] for r in records if "role" in r][:2] == ["system", "user"]
    assert any(r.get("event") == "turn_cancelled" for r in records)
    check_logs(rlm_env)
    assert files_containing(rlm_env, API_KEY) == []


def test_kill_9_leaves_no_kernel_behind(model, rlm_env, tmp_path, monkeypatch):
    """SIGKILL cannot be caught: every process rlm started (the kernels, the child agent's
    included, and any helper such as a kernel pool) must notice and exit by itself."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    root_pid, child_pid = tmp_path / "root.pid", tmp_path / "child.pid"
    model.script(
        reply(None, ipython(write_pid_code(root_pid) + "print(await rlm.run('child: hold'))")),
        reply("never"),
        match="root",
    )
    model.script(
        reply(None, ipython(write_pid_code(child_pid) + "import time\ntime.sleep(60)")),
        reply("never"),
        match="child: hold",
    )
    proc = rlm_process("root task")
    ready = wait_until(
        lambda: proc.poll() is not None or (read_pid(root_pid) and read_pid(child_pid)), 60
    )
    assert ready and proc.poll() is None, "rlm did not get going"
    kernels = {read_pid(root_pid), read_pid(child_pid)}
    started = descendants(proc.pid)
    assert kernels <= started, (kernels, started)
    proc.kill()
    finish(proc, 10)
    assert_gone(sorted(started), timeout=5)
    # What was written before the kill is intact; meta.json still says running (with the
    # pid of the dead orchestrator, so a reader can tell).
    folders = session_folders(rlm_env)
    assert len(folders) == 2
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["status"] == "running" and meta["pid"] == proc.pid
        assert read_jsonl(folder / "messages.jsonl")


def test_kill_9_leaves_no_background_process_behind(model, rlm_env, tmp_path):
    kernel_pid, sleeper_pid = tmp_path / "kernel.pid", tmp_path / "sleeper.pid"
    cell = (
        write_pid_code(kernel_pid)
        + "import subprocess, time\n"
        + "p = subprocess.Popen(['sleep', '1000'])\n"
        + f"open({str(sleeper_pid)!r}, 'w').write(str(p.pid))\n"
        + "time.sleep(60)"
    )
    model.script(reply(None, ipython(cell)), reply("never"))
    proc = rlm_process("root task")
    ready = wait_until(lambda: proc.poll() is not None or read_pid(sleeper_pid), 60)
    assert ready and proc.poll() is None, "rlm did not get going"
    pids = [read_pid(kernel_pid), read_pid(sleeper_pid)]
    proc.kill()
    finish(proc, 10)
    assert_gone(pids, timeout=5)


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_second_signal_during_a_slow_cleanup_exits_at_once(
    model, rlm_env, tmp_path, signum, exit_code
):
    """An impatient user signals again while rlm is stopping a cell that ignores the
    interrupt (a cleanup slowed by the 3 s interrupt grace and a kernel restart): rlm exits
    at once with 130/143, without a traceback, and leaves no kernel."""
    pid_file = tmp_path / "kernel.pid"
    cell = write_pid_code(pid_file) + (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    )
    model.script(reply(None, ipython(cell)), reply("never"))
    proc = rlm_process("a stubborn task")
    assert wait_until(lambda: proc.poll() is not None or read_pid(pid_file), 60)
    assert proc.poll() is None, "rlm did not get going"
    kernel = read_pid(pid_file)
    proc.send_signal(signum)
    time.sleep(0.5)  # the cleanup is under way: it waits 3 s for the interrupt to work
    second = time.monotonic()
    proc.send_signal(signum)
    _, err = finish(proc, 30)
    took = time.monotonic() - second
    assert proc.returncode == exit_code, err
    assert took < 2.5, f"rlm took {took:.1f} s to exit after the second signal"
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == "rlm: interrupted again; exiting without cleanup", err
    assert_gone([kernel], timeout=5)
    (folder,) = sessions(rlm_env)
    read_jsonl(folder / "messages.jsonl")  # what was written is intact


# -- many agents logging at once -------------------------------------------------------------


def call_then_answer(first):
    """A step for a child's queue: ``first`` on its first turn, then an answer naming its
    task (decided per request, so concurrent children cannot take each other's steps)."""

    def step(body: dict):
        if not any(m["role"] == "tool" for m in body["messages"]):
            return first
        task = next(m["content"] for m in body["messages"] if m["role"] == "user")
        return reply(f"answer to {task}")

    return step


async def test_50_concurrent_children_log_without_a_corrupt_line(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_MAX_CONCURRENCY", "50")
    code = (
        "import asyncio\n"
        "answers = await asyncio.gather(\n"
        "    *(rlm.run(f'child {i}', tools=['summarize']) for i in range(50)))\n"
        "print(len(answers), len(set(answers)), answers[7])"
    )
    model.script(reply(None, ipython(code)), reply("all answered"), match="root")
    # each child makes one bad tool call (two more log lines) before answering
    model.script(*[call_then_answer(reply(None, call("nope", {})))] * 100, match="child")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "all answered"
    assert tool_results(model.requests_for("root")) == ["50 50 answer to child 7"]
    (root,) = sessions(rlm_env)
    children = sorted(root.glob("sub-*"))
    assert len(children) == 50
    for child in children:
        records = read_jsonl(child / "messages.jsonl")
        roles = [r.get("role") for r in records]
        assert roles == ["system", "user", "assistant", "tool", "assistant"], (child, roles)
        assert records[-1]["content"] == f"answer to {records[1]['content']}"
        assert read_meta(child)["status"] == "done"
    entries = read_meta(root)["children"]
    assert len(entries) == 50 and {e["status"] for e in entries} == {"done"}
    assert check_logs(rlm_env) == 50 * 5 + len(read_jsonl(root / "messages.jsonl"))


async def test_8_concurrent_children_with_kernels(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    code = (
        "import asyncio\n"
        "answers = await asyncio.gather(*(rlm.run(f'kid {i}') for i in range(8)))\n"
        "print(sorted(answers))"
    )
    model.script(reply(None, ipython(code)), reply("all answered"), match="root")
    pid_cell = reply(None, ipython("import os\nprint(os.getpid())"))
    model.script(*[call_then_answer(pid_cell)] * 16, match="kid")
    before = descendants(os.getpid())
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "all answered"
        started = descendants(os.getpid()) - before
    assert_gone(sorted(started), timeout=5)  # pooled kernels and helpers end with the run
    assert tool_results(model.requests_for("root")) == [
        str(sorted(f"answer to kid {i}" for i in range(8)))
    ]
    pids = {int(tool_results([r])[0]) for r in model.requests_for("kid") if tool_results([r])}
    assert len(pids) == 8  # eight kernels really ran side by side
    assert not any(alive(pid) for pid in pids)
    (root,) = sessions(rlm_env)
    assert len(list(root.glob("sub-*"))) == 8
    check_logs(rlm_env)
