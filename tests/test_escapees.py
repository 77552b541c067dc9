"""No escapees (issue 15): what a cell started is gone after the run, even a process that
left the kernel's process group and session (``setsid``) or was double-forked (re-parented
away from the kernel), in the root's kernel and in a forked sub-agent's kernel, with every
sandbox level, as root and as an unprivileged user, through the real ``rlm`` command.

The sleepers carry a unique duration (``sleep 99999.<n>``) so they are found in ``/proc``
from outside any PID namespace. A zombie (state Z) is dead: it only waits to be reaped by
whatever inherited it (the container's init may never do that).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from rlm.sandbox import bwrap
from rlm.sandbox.landlock import abi_version
from sandboxing import interpreter as _interpreter
from sandboxing import python_path as _python_path
from sandboxing import run_rlm
from sandboxing import scratch as scratch  # the fixture
from scripted_model import ScriptedModel, ipython, reply

CELL = r"""
import json, os, subprocess, time
markers = MARKERS
subprocess.run(['sh', '-c', f'setsid sleep {markers[0]} >/dev/null 2>&1 &'], check=True)
child = os.fork()
if child == 0:  # a double fork: the grandchild is orphaned at once, in a session of its own
    if os.fork() == 0:
        os.setsid()
        os.execvp('sleep', ['sleep', markers[1]])
    os._exit(0)
os.waitpid(child, 0)
def running():
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            cmd = open(f'/proc/{pid}/cmdline', 'rb').read().decode()
        except OSError:
            continue
        found += [m for m in markers if m in cmd]
    return sorted(found)
deadline = time.monotonic() + 10
while running() != sorted(markers) and time.monotonic() < deadline:
    time.sleep(0.05)
print('PROBE', json.dumps({'running': running(), 'pgid': os.getpgid(0), 'sid': os.getsid(0)}))
"""


def _alive(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != b"Z":
            found.append(int(entry.name))
    return found


def _cases() -> list[tuple[str, str]]:
    unprivileged = "nobody" if os.geteuid() == 0 else "unprivileged"
    users = ["root", unprivileged] if os.geteuid() == 0 else [unprivileged]
    cases = [(user, "off") for user in users]
    if abi_version() >= 1:
        cases.append((users[0], "workspace"))
    if bwrap.unusable() is None:
        cases += [(user, "strict") for user in users]
    return cases


@pytest.mark.parametrize(("user", "sandbox"), _cases())
def test_setsid_and_double_forked_processes_are_gone_after_the_run(
    model: ScriptedModel, scratch: Path, user: str, sandbox: str
):
    if user == "nobody" and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run as nobody")
    work = scratch / "work"
    work.mkdir()
    if user == "nobody":
        for path in (scratch, work):
            os.chown(path, 65534, 65534)
    python = _interpreter(user, scratch)
    n = random.randrange(10**8, 10**9)
    root_markers = [f"99999.{n}1", f"99998.{n}1"]
    child_markers = [f"99999.{n}2", f"99998.{n}2"]
    model.script(
        reply(None, ipython(CELL.replace("MARKERS", repr(root_markers)))),
        reply(None, ipython("print(await rlm.run('child: escape'))")),
        reply("done"),
        match="root: escape",
    )
    model.script(
        reply(None, ipython(CELL.replace("MARKERS", repr(child_markers)))),
        reply("child done"),
        match="child: escape",
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "PYTHONPATH": _python_path(),
        "RLM_BASE_URL": model.base_url,
        "RLM_API_KEY": "sk-escapee-test",
        "RLM_MODEL": "scripted",
        "RLM_HOME": str(scratch / "home"),
        "RLM_MAX_DEPTH": "1",
        "RLM_KERNEL_START": "fork",
        "RLM_SANDBOX": sandbox,
        "RLM_EXEC_TIMEOUT": "60",
    }
    try:
        stderr = run_rlm(user, python, "root: escape", cwd=work, env=env)
        # The start notice names the level actually in force.
        assert f"rlm: sandbox {sandbox} (" in stderr, stderr
        for agent, markers in (("root: escape", root_markers), ("child: escape", child_markers)):
            tools = [m["content"] for m in model.requests_for(agent)[-1]["messages"]
                     if m["role"] == "tool"]  # fmt: skip
            probes = [json.loads(m.group(1)) for t in tools
                      if (m := re.search(r"PROBE (\{.*\})", t))]  # fmt: skip
            assert len(probes) == 1, (agent, tools)
            probe = probes[0]
            assert probe["running"] == sorted(markers), (agent, tools)
        # rlm has exited: nothing the cells started is left.
        left = {m: _alive(m) for m in root_markers + child_markers}
        assert all(not pids for pids in left.values()), left
    finally:
        for marker in root_markers + child_markers:
            for pid in _alive(marker):
                with __import__("contextlib").suppress(OSError):
                    os.kill(pid, 9)


RESTART_CHECK = r"""
import os
left = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().decode()
        state = open(f'/proc/{pid}/stat', 'rb').read().rsplit(b')', 1)[1].split()[0]
    except OSError:
        continue
    if MARKER in cmd and state != b'Z':
        left.append(pid)
print('LEFT', left)
"""


async def test_a_restart_takes_the_escapees_of_the_old_kernel_along(model, rlm_env, monkeypatch):
    """A cell that ignores the interrupt gets its kernel restarted; what the old kernel's
    cells had started in sessions of their own is gone in the new kernel's first cell."""
    from rlm.config import load_settings
    from rlm.runtime.orchestrator import Orchestrator

    marker = f"99997.{random.randrange(10**8, 10**9)}"
    start = f"import subprocess\nsubprocess.run(['setsid', '-f', 'sleep', '{marker}'], check=True)"
    stuck = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    model.script(
        reply(None, ipython(start)),
        reply(None, ipython(RESTART_CHECK.replace("MARKER", repr(marker)))),
        reply(None, ipython(stuck, timeout=1)),
        reply(None, ipython(RESTART_CHECK.replace("MARKER", repr(marker)))),
        reply("done"),
    )
    try:
        async with Orchestrator(load_settings()) as orchestrator:
            assert await orchestrator.run("restart") == "done"
        tools = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
        assert "LEFT ['" in tools[1], tools  # it was running
        assert "restarted" in tools[2], tools
        assert "LEFT []" in tools[3], tools
    finally:
        for pid in _alive(marker):
            os.kill(pid, 9)
