"""Security: credentials stay out of kernels and logs, the run directory is private, the
control channel only obeys its agents, and a kernel cannot lift its own limits."""

from __future__ import annotations

import json
import re
import stat
import threading
import time
from pathlib import Path

from faultkit import (
    API_KEY,
    check_logs,
    files_containing,
    session_folders,
    tool_results,
    user_messages,
)

import rlm
from conftest import read_meta, sessions
from helpers import run_cli
from rlm.config import load_settings
from rlm.kernels.environment import CREDENTIAL_DENY_LIST
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import call, fault, ipython, reply

#: Credentials planted in the environment, by name; each value is unique so a leak is traceable.
PLANTED = {
    "OPENAI_API_KEY": "sk-openai-planted-1111",
    "ANTHROPIC_API_KEY": "sk-ant-planted-2222",
    "FOO_API_KEY": "foo-planted-3333",  # not in the deny-list: caught by the *_API_KEY rule
    "my_service_api_key": "lower-planted-4444",
    "HF_TOKEN": "hf_planted_5555",
    "GEMINI_API_KEY": "gemini-planted-6666",
}

ENV_PROBE = r"""
import json, os
proc = open('/proc/self/environ', 'rb').read().decode('utf-8', 'replace').split('\0')
shell = !env
print(json.dumps({'environ': dict(os.environ), 'proc': proc, 'shell': list(shell)}))
"""


PROBE_STEPS = (
    reply(None, ipython(ENV_PROBE)),
    reply(None, ipython("%%bash\nenv")),
    reply(None, call("bash", {"command": "env; tr '\\0' '\\n' < /proc/self/environ"})),
)


async def test_credentials_never_reach_a_kernel_or_a_log(model, rlm_env, monkeypatch):
    """Looked for from a root kernel and from a child's (which may be started differently,
    e.g. forked from a pre-started process), through os.environ, /proc/self/environ, `!env`,
    a %%bash cell and the bash tool; then in every file of RLM_HOME."""
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RLM_TOOLS", "ipython,bash")
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    spawn = reply(None, ipython("print(await rlm.run('child: probe'))"))
    model.script(*PROBE_STEPS, spawn, reply("looked"), match="root")
    model.script(*PROBE_STEPS, reply("child looked"), match="child: probe")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root: find the keys") == "looked"
    secrets = {"RLM_API_KEY": API_KEY, **PLANTED}
    for agent in ("root", "child: probe"):
        probe, bash_cell, bash_tool, *_ = tool_results(model.requests_for(agent))
        seen = json.loads(probe)
        for name, value in secrets.items():
            assert name not in seen["environ"], (agent, name)
            assert all(not line.startswith(f"{name}=") for line in seen["proc"] + seen["shell"])
            for text in (probe, bash_cell, bash_tool):
                assert value not in text, f"{name} reached the {agent} kernel"
        # The control secret is taken out of os.environ at start-up, so subprocesses and `!`
        # commands do not inherit it (it stays in the kernel's own /proc/self/environ).
        assert "RLM_AGENT_SECRET" not in seen["environ"]
        assert not any(line.startswith("RLM_AGENT_SECRET=") for line in seen["shell"])
        assert "RLM_AGENT_SECRET=" not in bash_tool
        # Harmless variables still arrive: the filter is a deny-list, not an allow-list.
        assert seen["environ"]["RLM_MODEL"] == "scripted"
    assert tool_results(model.requests_for("root"))[-1] == "child looked"
    for value in secrets.values():
        assert files_containing(rlm_env, value) == []
    check_logs(rlm_env)


def test_the_deny_list_names_the_documented_credentials():
    assert {"RLM_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN"} <= set(
        CREDENTIAL_DENY_LIST
    )
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    for name in CREDENTIAL_DENY_LIST:
        assert f"`{name}`" in doc, f"{name} is missing from docs/security.md"


def test_the_cli_never_prints_or_logs_the_key(model, rlm_env):
    model.script(reply(None, ipython("print('hello')")), reply("bye"))
    result = run_cli("say hello", "--events")
    assert result.returncode == 0, result.stderr
    assert API_KEY not in result.stdout + result.stderr
    assert files_containing(rlm_env, API_KEY) == []
    check_logs(rlm_env)


def test_a_key_echoed_by_the_endpoint_is_not_logged(model, rlm_env):
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {API_KEY}"}})
    model.script(fault(401, body=body))
    result = run_cli("hello", "-q", env={"RLM_TOOLS": ""})
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr
    assert API_KEY not in result.stderr
    assert files_containing(rlm_env, API_KEY) == []


def test_a_malformed_key_is_refused_without_echoing_it(model, rlm_env):
    key = "sk-malformed-secret\nX-Injected: 1"
    result = run_cli("hello", "-q", env={"RLM_TOOLS": "", "RLM_API_KEY": key})
    assert "sk-malformed-secret" not in result.stderr
    assert files_containing(rlm_env, "sk-malformed-secret") == []
    assert result.returncode == 2, result.stderr  # a setting that cannot work: a usage error
    assert "RLM_API_KEY" in result.stderr and "Traceback" not in result.stderr
    assert model.requests == []


# -- the run directory -----------------------------------------------------------------------


def _modes(run_dir: Path) -> dict[str, tuple[int, str]]:
    entries = {}
    for path in [run_dir, *sorted(run_dir.rglob("*"))]:
        st = path.lstat()
        entries[str(path.relative_to(run_dir))] = (st.st_mode & 0o777, stat.filemode(st.st_mode))
    return entries


async def _modes_during_a_run(model) -> dict[str, tuple[int, str]]:
    """The run directory as it is while a kernel runs and the model is being asked."""
    seen: dict[str, tuple[int, str]] = {}
    holder: dict[str, Orchestrator] = {}

    def look(body: dict):
        seen.update(_modes(holder["o"].run_dir))
        return reply("looked")

    model.script(reply(None, ipython("1")), look)
    async with Orchestrator(load_settings()) as orchestrator:
        holder["o"] = orchestrator
        await orchestrator.run("look at the run dir")
    return seen


async def test_run_directory_is_private(model, rlm_env):
    seen = await _modes_during_a_run(model)
    assert seen["."][0] == 0o700, seen["."]  # (jupyter_client adds the sticky bit)
    connection_files = [name for name in seen if re.fullmatch(r"k\d+\.json", name)]
    assert connection_files == [], seen  # deleted once the kernel has read them
    assert seen["control"][1].startswith("s")  # the control socket lives in there too


async def test_run_directory_entries_are_owner_only(model, rlm_env):
    seen = await _modes_during_a_run(model)
    loose = {
        name: text
        for name, (mode, text) in seen.items()
        if name != "." and mode & (0o077 if text.startswith("d") else 0o177)
    }
    assert loose == {}, f"readable or writable by others: {loose}"


# -- the control channel ---------------------------------------------------------------------

#: Runs in a child agent's kernel: attacks the live control socket, claiming the root's
#: identity or its own, and reports which messages got any answer.
ATTACK = r"""
import json, zmq
from jupyter_client.session import Session
from rlm.control.channel import new_session, buffer_digests
st = rlm.inkernel._state
me, secret, root = st['agent_id'], st['secret'], st['agent_id'].split('/')[0]
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.linger = 0
sock.connect(st['address'])

def frames(session, claimed, msg_type='inputs_request', content=None, buffers=()):
    content = {**(content or {}), 'buffer_sha256': buffer_digests(list(buffers))}
    msg = session.msg(msg_type, content=content)
    return session.serialize(msg, ident=[claimed.encode()]) + list(buffers)

def answer(ms):
    return sock.recv_multipart() if sock.poll(ms) else None

mine = new_session(secret)
good = frames(mine, me)
sock.send_multipart(good)
first = answer(10000)
smuggle = {'task': 'smuggled task', 'inputs': []}
tampered = frames(mine, me, 'run_request', {'task': 'child: x', 'inputs': []})
tampered[-1] = json.dumps({'task': 'smuggled task', 'inputs': [], 'buffer_sha256': []}).encode()
swapped = frames(mine, me, 'run_request', {'task': 'smuggled task', 'inputs': [
    {'name': 'x', 'type': 'bytes', 'size': '1 bytes'}]}, buffers=[b'a'])
swapped[-1] = b'b'
attacks = {
    'unsigned': frames(Session(key=b'', username='rlm'), root, 'run_request', smuggle),
    'wrong key': frames(new_session('00' * 32), root, 'run_request', smuggle),
    'forged identity': frames(mine, root, 'run_request', smuggle),
    'unknown identity': frames(mine, 'nobody', 'run_request', smuggle),
    'replayed': good,
    'tampered content': tampered,
    'swapped buffer': swapped,
    'no delimiter': [b'garbage'],
}
for message in attacks.values():
    sock.send_multipart(message)
sock.send_multipart(frames(mine, me))  # a fresh, honest request is still served ...
after = answer(10000)
extra = answer(500)  # ... and it is the only answer
print(json.dumps({'first': first is not None, 'after': after is not None,
                  'extra': extra is not None, 'attacks': len(attacks)}))
"""


async def test_control_channel_rejects_forged_messages_from_a_kernel(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(
        reply(None, ipython("print(await rlm.run('child: attack'))")),
        reply("root done"),
        match="root",
    )
    model.script(reply(None, ipython(ATTACK)), reply("attacked"), match="child: attack")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "root done"
        rejected = orchestrator.control.rejected
    (report,) = tool_results(model.requests_for("child: attack"))
    outcome = json.loads(report)
    assert outcome == {"first": True, "after": True, "extra": False, "attacks": 8}
    assert rejected == 8
    tasks = [user_messages([r])[0] for r in model.requests]
    assert "smuggled task" not in tasks  # no forged request ever started an agent
    (root,) = sessions(rlm_env)
    assert [read_meta(p)["task"] for p in root.glob("sub-*")] == ["child: attack"]
    check_logs(rlm_env)


# -- limits a kernel cannot lift -------------------------------------------------------------

RAISE_DEPTH = r"""
import json, os
os.environ['RLM_MAX_DEPTH'] = '9'
os.environ['RLM_DEPTH'] = '-1'
rlm.inkernel._state.update(max_depth=9, depth=-1)
from rlm.control.channel import ControlClient
st = rlm.inkernel._state
out = {}
try:
    await rlm.run('child: sneaky')
    out['run'] = 'allowed'
except rlm.DepthLimitError as e:
    out['run'] = str(e)
raw = {'task': 'child: sneaky', 'inputs': [], 'max_depth': 9, 'depth': -1, 'max_concurrency': 99}
client = ControlClient(st['address'], st['agent_id'], st['secret'])
out['raw'], _ = await client.request('run_request', raw)
print(json.dumps(out))
"""


async def test_a_kernel_cannot_raise_its_depth_limit(model, rlm_env):
    model.script(reply(None, ipython(RAISE_DEPTH)), reply("stayed put"), match="root")
    assert await rlm.run("root task") == "stayed put"
    (report,) = tool_results(model.requests_for("root"))
    outcome = json.loads(report)
    assert "exceeds RLM_MAX_DEPTH=0" in outcome["run"], outcome
    assert outcome["raw"]["status"] == "error"
    assert outcome["raw"]["error_type"] == "DepthLimitError"
    assert len(model.requests) == 2  # no child ever asked the model anything
    assert list(sessions(rlm_env)[0].glob("sub-*")) == []
    check_logs(rlm_env)


RAISE_CONCURRENCY = r"""
import asyncio, json, os
from rlm.control.channel import ControlClient
os.environ['RLM_MAX_CONCURRENCY'] = '50'
st = rlm.inkernel._state
out = {}
try:
    await rlm.run('child: x', max_concurrency=50)
except (rlm.ConfigError, TypeError) as e:
    out['kwarg'] = type(e).__name__
client = ControlClient(st['address'], st['agent_id'], st['secret'])
async def raw(i):
    content = {'task': f'child {i}', 'inputs': [], 'tools': '', 'max_concurrency': 50,
               'max_depth': 5}
    reply, _ = await client.request('run_request', content)
    return reply.get('answer')
answers = await asyncio.gather(*(raw(i) for i in range(6)))
out['answers'] = sorted(answers)
print(json.dumps(out))
"""


async def test_a_kernel_cannot_raise_its_concurrency_limit(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_MAX_CONCURRENCY", "2")
    lock = threading.Lock()
    load = {"now": 0, "peak": 0}

    def slow_answer(body: dict):
        with lock:
            load["now"] += 1
            load["peak"] = max(load["peak"], load["now"])
        time.sleep(0.3)
        with lock:
            load["now"] -= 1
        task = next(m["content"] for m in body["messages"] if m["role"] == "user")
        return reply(f"done {task}")

    model.script(reply(None, ipython(RAISE_CONCURRENCY)), reply("ok"), match="root")
    model.script(*[slow_answer] * 6, match="child")
    assert await rlm.run("root task") == "ok"
    (report,) = tool_results(model.requests_for("root"))
    outcome = json.loads(report)
    assert outcome["kwarg"] in ("ConfigError", "TypeError")
    assert outcome["answers"] == [f"done child {i}" for i in range(6)]
    assert load["peak"] == 2, load  # queued two at a time, as configured
    for folder in session_folders(rlm_env)[1:]:
        settings = read_meta(folder)["settings"]
        assert settings["max_concurrency"] == 2 and settings["max_depth"] == 1
    check_logs(rlm_env)


async def test_library_overrides_are_refused_inside_a_kernel(model, rlm_env, monkeypatch):
    """``rlm.run`` in a cell accepts model, max_turns and tools only; limits are not open."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    code = (
        "for kw in ({'max_depth': 5}, {'max_concurrency': 9}, {'api_key': 'x'},"
        " {'base_url': 'http://evil'}):\n"
        "    try:\n"
        "        await rlm.run('child', **kw)\n"
        "    except rlm.ConfigError as e:\n"
        "        print('refused', *kw)"
    )
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    assert await rlm.run("root task") == "ok"
    (report,) = tool_results(model.requests_for("root"))
    assert report.splitlines() == [
        "refused max_depth",
        "refused max_concurrency",
        "refused api_key",
        "refused base_url",
    ]
    assert list(sessions(rlm_env)[0].glob("sub-*")) == []
