"""Per-kernel resource limits (``RLM_KERNEL_MEMORY``, ``RLM_KERNEL_PROCESSES``): an
allocation or process bomb in a cell is contained to that kernel; the run, the orchestrator
and the other kernels go on, and the model is told what happened.

The bombs here are bounded (a 20 GiB ``bytearray`` is mapped lazily, a "fork bomb" stops at
200 sleepers), so a broken limit fails the test without taking the machine down."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from rlm.config import load_settings
from rlm.errors import ConfigError
from rlm.runtime.orchestrator import Orchestrator
from rlm.sandbox import bwrap, limits, policy
from scripted_model import ScriptedModel, ipython, reply

MEMORY_BOMB = r"""
kept = 'state survives'
try:
    bomb = bytearray(20 << 30)
    print('BOMB allocated', len(bomb))
except MemoryError:
    print('BOMB MemoryError')
"""

PROCESS_BOMB = r"""
import subprocess
started = []
try:
    for _ in range(200):
        started.append(subprocess.Popen(['sleep', '60']))
    print('BOMB started all', len(started))
except OSError as exc:
    print('BOMB stopped at', len(started), type(exc).__name__)
finally:
    for proc in started:
        proc.kill()
        proc.wait()
"""

SPAWN = "print(await rlm.run('child: bomb'))"


def _tools(model: ScriptedModel, match: str) -> list[str]:
    requests = model.requests_for(match)
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def test_bad_limit_values_are_one_clear_line():
    with pytest.raises(ConfigError, match=r"^RLM_KERNEL_MEMORY: expected a size such as 4G"):
        policy.resolve_mode({"RLM_KERNEL_MEMORY": "lots"})
    with pytest.raises(ConfigError, match=r"^RLM_KERNEL_MEMORY: at least 256M"):
        policy.resolve_mode({"RLM_KERNEL_MEMORY": "10M"})
    with pytest.raises(ConfigError, match=r"^RLM_KERNEL_PROCESSES: expected a number"):
        policy.resolve_mode({"RLM_KERNEL_PROCESSES": "-5"})
    with pytest.raises(ConfigError, match=r"^RLM_KERNEL_PROCESSES: at least 16"):
        policy.resolve_mode({"RLM_KERNEL_PROCESSES": "3"})
    assert limits.resolve_limits({"RLM_KERNEL_MEMORY": "1.5GiB", "RLM_KERNEL_PROCESSES": "64"}) == (
        limits.Limits(memory=3 << 29, processes=64)
    )
    assert limits.resolve_limits({"RLM_KERNEL_MEMORY": "off"}) == limits.Limits()
    assert limits.format_size(4 << 30) == "4G"


def test_cli_refuses_a_bad_limit_with_exit_2(rlm_env):
    env = {**os.environ, "RLM_KERNEL_MEMORY": "4 gigs"}
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "hello"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RLM_KERNEL_MEMORY: expected a size such as 4G" in lines[0], lines


@pytest.mark.parametrize("sandbox", ["off", "workspace", "strict"])
async def test_allocation_bomb_is_a_memory_error_in_that_kernel_only(
    model, rlm_env, monkeypatch, sandbox
):
    """Root kernel (cold start) and a sub-agent's kernel (forked; cold in bubblewrap for
    ``strict``): each gets a MemoryError for a 20 GiB allocation under a 1G limit and keeps
    its variables."""
    if sandbox == "workspace" and policy.abi_version() < 1:
        pytest.skip("no Landlock in this kernel")
    if sandbox == "strict" and bwrap.unusable() is not None:
        pytest.skip(f"{bwrap.unusable()}")
    monkeypatch.setenv("RLM_KERNEL_MEMORY", "1G")
    monkeypatch.setenv("RLM_SANDBOX", sandbox)
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    after = "print('AFTER', kept)"
    model.script(
        reply(None, ipython(MEMORY_BOMB)),
        reply(None, ipython(after)),
        reply(None, ipython(SPAWN)),
        reply("done"),
        match="root",
    )
    model.script(
        reply(None, ipython(MEMORY_BOMB)), reply(None, ipython(after)), reply("child done"),
        match="child: bomb",
    )  # fmt: skip
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root: bomb") == "done"
        assert orchestrator.launcher.forking is (sandbox != "strict")
    for agent in ("root", "child: bomb"):
        tools = _tools(model, agent)
        assert "BOMB MemoryError" in tools[0], tools[0]
        assert "AFTER state survives" in tools[1], tools[1]
    assert "child done" in _tools(model, "root")[2]


@pytest.mark.parametrize("sandbox", ["off", "workspace"])
async def test_process_bomb_stops_at_the_limit(model, rlm_env, monkeypatch, sandbox):
    if "pids" not in limits.cgroup_parents() and os.geteuid() == 0:
        pytest.skip("as root the process limit needs a writable pids cgroup")
    if sandbox == "workspace" and policy.abi_version() < 1:
        pytest.skip("no Landlock in this kernel")
    monkeypatch.setenv("RLM_KERNEL_PROCESSES", "32")
    monkeypatch.setenv("RLM_SANDBOX", sandbox)
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(
        reply(None, ipython(PROCESS_BOMB)), reply(None, ipython(SPAWN)), reply("done"),
        match="root",
    )  # fmt: skip
    model.script(reply(None, ipython(PROCESS_BOMB)), reply("child done"), match="child: bomb")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root: bomb") == "done"
    for agent in ("root", "child: bomb"):
        (first, *_) = _tools(model, agent)
        found = re.search(r"BOMB stopped at (\d+) BlockingIOError", first)
        assert found, first
        # The kernel's own threads count too: fewer than 32 sleepers got started.
        assert 0 < int(found.group(1)) < 32, first
    # Each kernel had a budget of its own: the child's bomb was not starved by the root's.
    assert "child done" in _tools(model, "root")[1]


async def test_kernel_over_its_memory_cgroup_is_restarted_and_the_model_told_why(
    model, rlm_env, monkeypatch
):
    """The kernel (300 MiB) and a process it started (280 MiB) together pass a 512M limit:
    the cgroup's OOM killer picks the kernel, rlm restarts it and the model reads why."""
    if "memory" not in limits.cgroup_parents():
        pytest.skip("no writable memory cgroup here")
    monkeypatch.setenv("RLM_KERNEL_MEMORY", "512M")
    grow = (
        "import subprocess, sys\n"
        "held = bytearray(300 << 20)\n"
        "held[::4096] = b'x' * (len(held) // 4096)\n"  # touched: resident, charged
        "subprocess.run([sys.executable, '-c', \"b = b'x' * (280 << 20)\"])\n"
        "print('survived')\n"
    )
    model.script(
        reply(None, ipython(grow)), reply(None, ipython("print('AFTER', 1 + 1)")), reply("done"),
        match="root",
    )  # fmt: skip
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root: grow") == "done"
    died, after = _tools(model, "root")
    assert "the kernel died (exit code -9): memory limit 512M reached" in died, died
    assert "AFTER 2" in after, after


def test_help_names_the_limits():
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "RLM_KERNEL_MEMORY (e.g. 4G)" in text and "RLM_KERNEL_PROCESSES (e.g. 256)" in text
