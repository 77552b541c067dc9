"""Kernel-side faults: the kernel dies, hangs, floods or leaves processes behind.

Each case checks what the model is told, that the run goes on to its answer, that no process
is left, and that ``messages.jsonl`` holds the whole conversation as valid JSONL.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest
from faultkit import (
    assert_gone,
    assert_nothing_lost,
    async_wait_until,
    check_logs,
    finish,
    read_jsonl,
    read_pid,
    rlm_process,
    run_root,
    tool_results,
    write_pid_code,
)

from conftest import sessions
from helpers import peak_rss_mib, reset_peak_rss
from rlm.agent import events as ev
from scripted_model import ipython, reply


def restarts(events: list) -> list[str]:
    return [e.reason for e in events if isinstance(e, ev.KernelRestarted)]


# -- the kernel dies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "code", "exit_code"),
    [
        ("os._exit", "import os\nos._exit(1)", "exit code 1"),
        ("segfault", "import ctypes\nctypes.string_at(0)", "exit code -11"),
        ("SIGKILL", "import time\ntime.sleep(60)", "exit code -9"),
    ],
    ids=["os._exit", "segfault", "SIGKILL"],
)
async def test_kernel_death_is_reported_and_the_run_goes_on(
    model, rlm_env, tmp_path, how, code, exit_code
):
    pid_file = Path.cwd() / "kernel.pid"  # in the workspace: a sandbox allows it
    model.script(
        reply(None, ipython("x = 'before'")),
        reply(None, ipython(write_pid_code(pid_file) + code)),
        reply(None, ipython("print(globals().get('x', 'variables gone'))")),
        reply("recovered"),
    )
    events: list = []
    run = asyncio.create_task(run_root("survive a dying kernel", events))
    assert await async_wait_until(lambda: read_pid(pid_file) or run.done(), 60)
    pid = read_pid(pid_file)
    assert pid is not None
    if how == "SIGKILL":  # from another process, as an OOM killer or a user would
        subprocess.run(["kill", "-KILL", str(pid)], check=True)
    assert await run == "recovered"

    died, after = tool_results(model.requests)[1:]
    assert f"the kernel died ({exit_code})" in died, died
    assert "restarted" in died and "variables and imports are lost" in died
    assert after == "variables gone"  # a fresh interpreter, and it works
    assert restarts(events) == ["died"]
    assert_gone([pid], timeout=1)
    (folder,) = sessions(rlm_env)
    assert_nothing_lost(folder, model.requests, "recovered")
    assert any(r.get("event") == "kernel_restarted" for r in read_jsonl(folder / "messages.jsonl"))
    check_logs(rlm_env)


# -- the kernel hangs ------------------------------------------------------------------------


async def test_busy_loop_is_interrupted_and_state_is_kept(model, rlm_env):
    model.script(
        reply(None, ipython("x = 'kept'")),
        reply(None, ipython("while True: pass", timeout=1)),
        reply(None, ipython("print(x)")),
        reply("interrupted"),
    )
    events: list = []
    assert await run_root("spin", events) == "interrupted"
    spun, after = tool_results(model.requests)[1:]
    assert "timed out after 1 s: execution interrupted, kernel state kept" in spun
    assert "KeyboardInterrupt" not in spun  # the interrupt's own traceback is noise
    assert after == "kept"
    assert restarts(events) == []
    assert_nothing_lost(sessions(rlm_env)[0], model.requests, "interrupted")
    check_logs(rlm_env)


async def test_blocking_call_that_ignores_sigint_restarts_the_kernel(model, rlm_env, tmp_path):
    pid_file = Path.cwd() / "kernel.pid"  # in the workspace: a sandbox allows it
    code = write_pid_code(pid_file) + (
        "import ctypes, signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "ctypes.CDLL(None).sleep(60)  # C level: no Python bytecode runs until it returns"
    )
    model.script(
        reply(None, ipython("x = 'lost'")),
        reply(None, ipython(code, timeout=1)),
        reply(None, ipython("print(globals().get('x', 'variables gone'))")),
        reply("restarted"),
    )
    events: list = []
    assert await run_root("block", events) == "restarted"
    blocked, after = tool_results(model.requests)[1:]
    assert "timed out after 1 s and did not stop when interrupted" in blocked
    assert "the kernel was restarted, all variables and imports are lost" in blocked
    assert after == "variables gone"
    assert restarts(events) == ["restarted"]
    assert_gone([read_pid(pid_file)], timeout=1)  # the stuck interpreter did not linger
    assert_nothing_lost(sessions(rlm_env)[0], model.requests, "restarted")
    check_logs(rlm_env)


# -- the kernel floods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "print('x' * 100_000_000)",
        "import os\n_ = os.write(1, b'z' * 100_000_000)",  # at the file-descriptor level
        "'v' * 100_000_000",  # the cell's value
    ],
    ids=["print", "fd-level", "value"],
)
async def test_100_mb_of_output_is_capped(model, rlm_env, monkeypatch, code):
    monkeypatch.setenv("RLM_MAX_OUTPUT", "2000")
    model.script(
        reply(None, ipython(code)),
        reply(None, ipython("print('still here')")),
        reply("flooded"),
    )
    assert await run_root("flood") == "flooded"
    flood, after = tool_results(model.requests)
    assert len(flood) < 2100, len(flood)
    dropped = re.search(r"\[output truncated: ([\d,]+) more characters dropped\]", flood)
    assert dropped, flood[-200:]
    assert int(dropped.group(1).replace(",", "")) > 99_000_000
    assert after == "still here"
    (folder,) = sessions(rlm_env)
    assert (folder / "messages.jsonl").stat().st_size < 50_000
    assert_nothing_lost(folder, model.requests, "flooded")
    check_logs(rlm_env)


_FLOOD = 40_000_000


@pytest.mark.parametrize(
    "code",
    [
        f"print('x' * {_FLOOD})",
        f"'v' * {_FLOOD}",  # the cell's value: an execute_result
        f"from IPython.display import display\ndisplay({{'text/plain': 'd' * {_FLOOD}}}, raw=True)",
        f"from IPython.display import HTML, display\ndisplay(HTML('h' * {_FLOOD}))",
        f"raise ValueError('e' * {_FLOOD})",  # the traceback repeats the message
    ],
    ids=["stream", "value", "display_data", "html", "error"],
)
async def test_orchestrator_memory_does_not_grow_with_output(model, rlm_env, monkeypatch, code):
    """The cap must bound the orchestrator's memory too, not only what the model reads: the
    peak RSS growth while a cell shows 40 MB (of any output type) stays far below 40 MB, and
    the model is told how much was dropped."""
    monkeypatch.setenv("RLM_MAX_OUTPUT", "2000")
    marks: dict[str, float] = {}

    def flood(body: dict):  # served right before the cell runs: measure only the flood
        reset_peak_rss()
        marks["before"] = peak_rss_mib()
        return reply(None, ipython(code))

    model.script(reply(None, ipython("1")), flood, reply("flooded"))
    assert await run_root("flood") == "flooded"
    growth = peak_rss_mib() - marks["before"]
    assert growth < 16, f"the orchestrator's peak RSS grew by {growth:.0f} MB"
    _, result = tool_results(model.requests)
    assert len(result) < 2200, len(result)
    dropped = re.search(r"\[output truncated: ([\d,]+) more characters dropped\]", result)
    assert dropped, result[-300:]
    assert int(dropped.group(1).replace(",", "")) > _FLOOD - 1_000_000


async def test_invalid_utf8_and_binary_bytes_on_stdout(model, rlm_env):
    cells = [
        "import os\n_ = os.write(1, b'fd:\\xff\\xfe\\x00\\x80 end\\n')",
        "!printf 'shell:\\377\\376\\001 end\\n'",
        "print('surrogate:\\udcff end')",
        "print('controls:\\x00\\x1b[31m\\x07 end')",
    ]
    model.script(*(reply(None, ipython(code)) for code in cells), reply("bytes survived"))
    assert await run_root("binary") == "bytes survived"
    results = tool_results(model.requests)
    assert len(results) == len(cells)
    for prefix, result in zip(["fd:", "shell:", "surrogate:", "controls:"], results, strict=True):
        assert result.startswith(prefix), results
        assert "Traceback" not in result and "Error" not in result, result
        assert result.endswith(" end"), result
        result.encode("utf-8")  # what reached the model is valid text
    assert "\ufffd" in results[0] and "\ufffd" in results[1]
    (folder,) = sessions(rlm_env)
    assert_nothing_lost(folder, model.requests, "bytes survived")
    check_logs(rlm_env)


async def test_binary_bytes_through_sys_stdout_buffer(model, rlm_env):
    """Scripts written for a terminal write bytes to ``sys.stdout.buffer``; in a kernel that
    attribute does not exist unless rlm provides it."""
    code = (
        "import sys\n"
        "sys.stdout.buffer.write(b'out:\\xff\\xfe\\x00 end\\n')\n"
        "sys.stdout.buffer.flush()\n"
        "sys.stderr.buffer.write(b'err:\\xc3( end\\n')"
    )
    model.script(reply(None, ipython(code)), reply("bytes survived"))
    assert await run_root("binary buffer") == "bytes survived"
    (result,) = tool_results(model.requests)
    assert "Traceback" not in result and "Error" not in result, result
    assert "out:\ufffd\ufffd\x00 end" in result and "err:\ufffd( end" in result, result
    assert_nothing_lost(sessions(rlm_env)[0], model.requests, "bytes survived")
    check_logs(rlm_env)


def test_cell_output_never_reaches_the_cli_stdout(model, rlm_env):
    """stdout carries the answer alone: what a cell writes at the fd level, or a subprocess
    it runs, goes to the model, not to the user's terminal or pipe."""
    cell = (
        "import os, subprocess\n"
        "_ = os.write(1, b'LEAK-fd1 \\xff\\n')\n"
        "_ = os.write(2, b'LEAK-fd2\\n')\n"
        "_ = subprocess.run(['echo', 'LEAK-subprocess'])"
    )
    model.script(reply(None, ipython(cell)), reply("the answer"))
    proc = rlm_process("write around", "-q")
    out, err = finish(proc, 60)
    assert proc.returncode == 0, err
    (result,) = tool_results(model.requests)
    assert "LEAK-fd1" in result and "LEAK-subprocess" in result  # the model saw it all
    assert out == "the answer\n"
    assert "LEAK" not in err
    check_logs(rlm_env)


# -- the kernel leaves processes behind ------------------------------------------------------


@pytest.mark.parametrize("agent", ["root", "child"])
async def test_background_processes_die_with_the_kernel(
    model, rlm_env, tmp_path, monkeypatch, agent
):
    """Processes a cell leaves running end with its agent's kernel, for the root and for a
    sub-agent (whose kernel may be started another way)."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    popen_pid, shell_pid = Path.cwd() / "popen.pid", Path.cwd() / "shell.pid"  # the workspace
    spawn = [
        reply(
            None,
            ipython(
                "import subprocess\n"
                "p = subprocess.Popen(['sleep', '1000'], start_new_session=False)\n"
                f"open({str(popen_pid)!r}, 'w').write(str(p.pid))"
            ),
        ),
        reply(None, ipython(f"!sleep 1000 & echo $! > {shell_pid}")),
        reply(None, ipython("print('cells returned')")),
    ]
    spawner = "root" if agent == "root" else "child: spawn"
    if agent == "child":
        ask = reply(None, ipython("print(await rlm.run('child: spawn'))"))
        model.script(ask, match="root")
    model.script(*spawn, reply("left them running"), match=spawner)
    if agent == "child":
        model.script(reply("the child left them running"), match="root")
    assert (await run_root("root: spawn and leave")).endswith("left them running")
    assert tool_results(model.requests_for(spawner))[-1] == "cells returned"
    pids = [read_pid(popen_pid), read_pid(shell_pid)]
    assert None not in pids
    assert_gone(pids, timeout=5)
    check_logs(rlm_env)
