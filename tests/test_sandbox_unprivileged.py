"""The attacks of issue #15 from a cell, with the whole run as root and as an unprivileged
uid (``nobody`` via ``setpriv`` when the tests run as root, else the current user).

A cell reads the orchestrator's ``/proc/<pid>/environ`` and ``mem`` and tries to ptrace it;
a non-dumpable orchestrator refuses all of it to a same-uid, non-root process; root
(``CAP_SYS_PTRACE``) still gets through, so as root the check is that the key was wiped from
the orchestrator's environment block. A sub-agent's cell reads its parent's kernel's initial
environment, which no longer holds the control secret.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from rlm.sandbox.landlock import abi_version
from sandboxing import command as _command
from sandboxing import interpreter as _interpreter
from sandboxing import python_path as _python_path
from sandboxing import scratch as scratch  # the fixture
from scripted_model import ScriptedModel, ipython, reply

KEY = "sk-unprivileged-probe-key-0042"
PLANTED = {"ANTHROPIC_AUTH_TOKEN": "anthropic-planted-777", "HF_API_TOKEN": "hf-planted-888"}

DRIVER = """
import asyncio, os, sys
from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator

os.umask(0o022)
os.environ["PROBE_ORCHESTRATOR"] = str(os.getpid())


async def main() -> None:
    async with Orchestrator(load_settings()) as orchestrator:
        print(await orchestrator.run(sys.argv[1]))


asyncio.run(main())
"""

ATTEMPT = r"""
import ctypes, json, os
def attempt(pid, what):
    if what == 'ptrace':
        if os.geteuid() == 0:
            return 'not tried as root'
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        if libc.ptrace(16, int(pid), None, None) == 0:  # PTRACE_ATTACH: stops the target
            os.waitpid(int(pid), 0x40000000)  # __WALL: until it is stopped
            libc.ptrace(17, int(pid), None, None)  # PTRACE_DETACH: let it run on
            return 'attached'
        return os.strerror(ctypes.get_errno())
    try:
        with open(f'/proc/{pid}/{what}', 'rb') as handle:
            data = handle.read(1 << 20) if what == 'environ' else b''
    except PermissionError:
        return 'PermissionError'
    except OSError as exc:
        return type(exc).__name__
    leaks = [name for name, value in (('key', KEY.encode()), ('secret', b'RLM_AGENT_SECRET='))
             if value in data]
    return 'read:' + (','.join(leaks) or 'clean')
"""

ROOT_CELL = (
    ATTEMPT
    + r"""
own = open('/proc/self/environ', 'rb').read().decode(errors='replace')
orchestrator = os.environ['PROBE_ORCHESTRATOR']
print('PROBE', json.dumps({
    'environ': attempt(orchestrator, 'environ'),
    'mem': attempt(orchestrator, 'mem'),
    'ptrace': attempt(orchestrator, 'ptrace'),
    'own_environ_leaks': [n for n in ('RLM_AGENT_SECRET', *PLANTED) if n + '=' in own],
}))
"""
)

CHILD_CELL = (
    ATTEMPT
    + r"""
print('PROBE', json.dumps({'environ': attempt(victim, 'environ'), 'mem': attempt(victim, 'mem')}))
"""
)

SPAWN = "print(await rlm.run('child: probe the parent', inputs={'victim': os.getpid()}))"


def _cell(code: str) -> str:
    return f"KEY = {KEY!r}\nPLANTED = {tuple(PLANTED)!r}\n" + code


def _cases() -> list[tuple[str, str, str]]:
    """(user, kernel start, sandbox): both users without the sandbox; the workspace sandbox
    as the unprivileged user, where it separates agents (root has CAP_SYS_PTRACE)."""
    unprivileged = "nobody" if os.geteuid() == 0 else "unprivileged"
    users = ["root", unprivileged] if os.geteuid() == 0 else [unprivileged]
    cases = [(user, start, "off") for user in users for start in ("cold", "fork")]
    if abi_version() >= 1:
        cases += [(unprivileged, start, "workspace") for start in ("cold", "fork")]
    return cases


def _probes(model: ScriptedModel, match: str) -> dict:
    requests = model.requests_for(match)
    assert requests, f"no request for {match!r}"
    tools = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    found = [re.search(r"PROBE (\{.*\})", text) for text in tools]
    probes = [json.loads(m.group(1)) for m in found if m]
    assert len(probes) == 1, tools
    return probes[0]


@pytest.mark.parametrize(("user", "start", "sandbox"), _cases())
def test_cells_cannot_reach_the_orchestrator_or_another_agent(
    model: ScriptedModel, scratch: Path, user: str, start: str, sandbox: str
):
    if user == "nobody" and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run as nobody")
    home, work = scratch / "home", scratch / "work"
    work.mkdir()
    driver = scratch / "driver.py"
    driver.write_text(DRIVER)
    if user == "nobody":
        for path in (scratch, work, driver):
            os.chown(path, 65534, 65534)
    python = _interpreter(user, scratch)
    model.script(
        reply(None, ipython(_cell(ROOT_CELL))), reply(None, ipython(SPAWN)), reply("done"),
        match="root: probe",
    )  # fmt: skip
    model.script(reply(None, ipython(_cell(CHILD_CELL))), reply("child done"), match="child: probe")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "PYTHONPATH": _python_path(),
        "RLM_BASE_URL": model.base_url,
        "RLM_API_KEY": KEY,
        "RLM_MODEL": "scripted",
        "RLM_HOME": str(home),
        "RLM_MAX_DEPTH": "1",
        "RLM_KERNEL_START": start,
        "RLM_SANDBOX": sandbox,
        "RLM_SDK_MAX_RETRIES": "0",
        "RLM_EXEC_TIMEOUT": "60",
        **PLANTED,
    }
    result = subprocess.run(
        [*_command(user, python), str(driver), "root: probe"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("done")

    root, child = _probes(model, "root: probe"), _probes(model, "child: probe")
    assert root["own_environ_leaks"] == []
    if user == "root":
        # CAP_SYS_PTRACE reads any process: the key is at least gone from the environ block.
        assert root["environ"] == "read:clean"
    else:
        assert root["environ"] == "PermissionError", root
        assert root["mem"] == "PermissionError", root
        assert root["ptrace"] == "Operation not permitted", root
    if sandbox == "workspace":
        # Each kernel is its own Landlock domain: no access to another agent's process.
        assert child == {"environ": "PermissionError", "mem": "PermissionError"}, child
    else:
        # Another agent's kernel is an ordinary same-uid process: its initial environment
        # at least holds no control secret.
        assert child["environ"] == "read:clean", child

    (folder,) = sorted((home / "sessions").iterdir())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "messages.jsonl").stat().st_mode) == 0o600
    (sub,) = [p for p in folder.iterdir() if p.name.startswith("sub-")]
    assert stat.S_IMODE(sub.stat().st_mode) == 0o700
