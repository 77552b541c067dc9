"""A root orchestrator under ``RLM_SANDBOX=workspace``: its kernels and bash commands give up
root's capabilities, so Landlock and ``/proc`` permissions hold as for a normal user.

Two runs at once in this (root) process: run B's kernel waits on a FIFO while run A's root
kernel (cold start) and A's sub-agent's kernel (forked) try, from a cell, what issue #15's
attacker did: read the orchestrator's ``/proc/<pid>/environ`` and ``mem``, ptrace it, signal
run B's kernel, read its environment, read another user's private file. Landlock alone
stops the signal, ptrace and ``mem``; ``environ`` and the private file need the capability
drop (``CAP_SYS_PTRACE``, ``CAP_DAC_OVERRIDE``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator
from rlm.sandbox.landlock import abi_version
from scripted_model import ScriptedModel, call, ipython, reply

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="root only: what a root orchestrator's kernel may do"
    ),
    pytest.mark.skipif(abi_version() < 6, reason="needs Landlock ABI 6 (signal scoping)"),
]

PROBE = r"""
import ctypes, json, os, signal
def attempt(path):
    try:
        with open(path, 'rb') as handle:
            handle.read(64)
        return 'read'
    except OSError as exc:
        return type(exc).__name__
def ptrace(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
        os.waitpid(pid, 0x40000000)
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
        return 'attached'
    return os.strerror(ctypes.get_errno())
def signal_it(pid):
    try:
        os.kill(pid, signal.SIGCONT)  # harmless if it gets through
        return 'sent'
    except OSError as exc:
        return type(exc).__name__
caps = dict(line.split(':\t') for line in open('/proc/self/status').read().splitlines()
            if line.startswith('Cap'))
print('PROBE', json.dumps({
    'environ': attempt(f'/proc/{ORCHESTRATOR}/environ'),
    'mem': attempt(f'/proc/{ORCHESTRATOR}/mem'),
    'ptrace': ptrace(ORCHESTRATOR),
    'signal_other_run': signal_it(int(victim)),
    'other_run_environ': attempt(f'/proc/{victim}/environ'),
    'private_file': attempt(PRIVATE),
    'capabilities': [caps['CapEff'], caps['CapPrm'], caps['CapBnd']],
}))
"""

DENIED = {
    "environ": "PermissionError",
    "mem": "PermissionError",
    "ptrace": "Operation not permitted",
    "signal_other_run": "PermissionError",
    "other_run_environ": "PermissionError",
    "private_file": "PermissionError",
    "capabilities": ["0000000000000000"] * 3,
}


def _probe(model: ScriptedModel, match: str) -> dict:
    requests = model.requests_for(match)
    tools = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    found = [json.loads(m.group(1)) for t in tools if (m := re.search(r"PROBE (\{.*\})", t))]
    assert len(found) == 1, "\n".join(tools)
    return found[0]


async def test_root_kernels_drop_capabilities_and_cannot_reach_another_run(
    model, rlm_env, monkeypatch, tmp_path
):
    work = Path.cwd()
    private = tmp_path / "private"
    private.write_text("another user's secret")
    os.chown(private, 65534, 65534)
    private.chmod(0o600)
    ready, done = work / "ready.fifo", work / "done.fifo"
    os.mkfifo(ready)
    os.mkfifo(done)
    monkeypatch.setenv("RLM_SANDBOX", "workspace")
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_TOOLS", "ipython,bash")
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", "30")
    # Run B: its kernel says its pid through one FIFO, then waits on the other until A is done.
    victim = f"import os\nopen({str(ready)!r}, 'w').write(str(os.getpid()))\nprint(open({str(done)!r}).read())"
    model.script(reply(None, ipython(victim)), reply("victim done"), match="run B")
    probe = f"ORCHESTRATOR = {os.getpid()}\nPRIVATE = {str(private)!r}\n" + PROBE
    receive = f"victim = open({str(ready)!r}).read()\n"
    spawn = "print(await rlm.run('child: probe', inputs={'victim': victim}))"
    bash = f"cat {private} || echo bash-denied; grep CapEff /proc/self/status"
    model.script(
        reply(None, ipython(receive + probe)),
        reply(None, ipython(spawn)),
        reply(None, call("bash", {"command": bash})),
        reply(None, ipython(f"open({str(done)!r}, 'w').write('released')")),
        reply("attacker done"),
        match="run A",
    )  # fmt: skip
    model.script(reply(None, ipython(probe)), reply("child done"), match="child: probe")

    async def run(prompt: str) -> str:
        async with Orchestrator(load_settings()) as orchestrator:
            assert orchestrator.sandbox == "workspace"
            result = await orchestrator.run(prompt)
            assert orchestrator.launcher.forking  # the sub-agent's kernel was forked
            return result

    results = await asyncio.wait_for(asyncio.gather(run("run B"), run("run A")), timeout=100)
    assert results == ["victim done", "attacker done"]
    assert _probe(model, "run A") == DENIED
    assert _probe(model, "child: probe") == DENIED
    tools = [
        m["content"] for m in model.requests_for("run A")[-1]["messages"] if m["role"] == "tool"
    ]
    assert "bash-denied" in tools[2] and "CapEff:\t0000000000000000" in tools[2], tools[2]
    assert "another user's secret" not in tools[2]
