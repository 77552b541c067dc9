"""``RLM_SANDBOX=strict`` (bubblewrap): through the real ``rlm`` command, as root and as an
unprivileged user, a cell, its ``!commands``, a ``%%bash`` cell, the bash tool and a
sub-agent's cell write only in the workspace (elsewhere: an error, and the run goes on), see
an empty private ``/tmp`` (no other run's run directory), no session logs of other runs, no
process outside their sandbox, and no network; a cell that overruns its timeout is
interrupted by a message (the kernel keeps its state) and a kernel that dies is restarted.
Skipped where bwrap cannot run; the fallback itself is tested without it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rlm.sandbox import bwrap, policy
from rlm.sandbox.landlock import abi_version
from sandboxing import interpreter as _interpreter
from sandboxing import probe as _probe
from sandboxing import python_path as _python_path
from sandboxing import run_rlm
from sandboxing import scratch as scratch  # the fixture
from sandboxing import tool_texts as _tool_texts
from sandboxing import users as _users
from scripted_model import ScriptedModel, call, ipython, reply

needs_bwrap = pytest.mark.skipif(bwrap.unusable() is not None, reason=f"{bwrap.unusable()}")

PROBE = r"""
import errno, json, os, socket, subprocess
def write(path):
    try:
        with open(path, 'w') as handle:
            handle.write('x')
        return 'written'
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def connect():
    try:
        socket.create_connection(('127.0.0.1', PORT), timeout=5).close()
        return 'connected'
    except OSError as exc:
        return type(exc).__name__
print('PROBE', json.dumps({
    'cwd': write('inside-NAME.txt'),
    'outside': write('OUTSIDE/cell-NAME.txt'),
    "system_file": write("/etc/rlm-cell-NAME.txt"),
    'tmp': write('/tmp/private-NAME.txt'),
    'host_tmp_marker': os.path.exists('MARKER'),
    'other_run_dir': os.path.exists('OTHER_RUN'),
    'other_sessions': sorted(os.listdir('SESSIONS')) if os.path.isdir('SESSIONS') else None,
    'processes': len([p for p in os.listdir('/proc') if p.isdigit()]),
    'oom_score_adj': int(open('/proc/self/oom_score_adj').read()),
    'network': connect(),
    'shell_outside': subprocess.run(['sh', '-c', 'echo x > OUTSIDE/sh.txt'],
                                    capture_output=True).returncode,
}))
"""

ROOT_STEPS = [
    "x = 41",
    "!echo x > OUTSIDE/bang.txt || echo bang-denied; echo x > inside-bang.txt && echo bang-ok",
    "%%bash\necho x > OUTSIDE/bash.txt || echo cell-denied\necho x > inside-cell.txt && echo cell-ok",
]


@needs_bwrap
@pytest.mark.parametrize("user", _users())
def test_strict_confines_cells_shells_bash_and_sub_agents(
    model: ScriptedModel, scratch: Path, user: str
):
    if user == "nobody" and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run as nobody")
    work = scratch / "work"
    work.mkdir()
    # Session logs of an earlier run, where they are by default (.rlm in the workspace).
    sessions = work / ".rlm" / "sessions"
    (sessions / "earlier-run").mkdir(parents=True)
    (sessions / "earlier-run" / "meta.json").write_text("{}")
    # A directory anyone may write to (only the sandbox stops the writes), outside /tmp.
    outside = Path(tempfile.mkdtemp(prefix="rlm-outside-", dir="/var/tmp"))
    outside.chmod(0o777)
    marker = scratch / "host-marker"
    marker.write_text("x")
    other_run = Path(tempfile.mkdtemp(prefix="rlm-"))  # another run's run directory
    if user == "nobody":
        for path in (scratch, work, *sessions.parent.rglob("*"), sessions.parent):
            os.chown(path, 65534, 65534)
    python = _interpreter(user, scratch)
    own_oom = int(Path("/proc/self/oom_score_adj").read_text())  # rlm inherits it
    port = int(model.base_url.rsplit(":", 1)[1].split("/")[0])

    def probe(name: str) -> str:
        return (
            PROBE.replace("OUTSIDE", str(outside))
            .replace("PORT", str(port))
            .replace("MARKER", str(marker))
            .replace("OTHER_RUN", str(other_run))
            .replace("SESSIONS", str(sessions))
            .replace("NAME", name)
        )

    bash = (
        f"echo x > {outside}/tool.txt || echo tool-denied; echo x > inside-tool.txt && echo tool-ok"
    )
    model.script(
        reply(None, ipython(probe("root"))),
        *(reply(None, ipython(step)) for step in ROOT_STEPS),
        reply(None, call("bash", {"command": bash})),
        reply(None, ipython("import time\ntime.sleep(120)", timeout=3)),
        reply(None, ipython("print('kept', x + 1)")),
        reply(None, ipython("import os\nos._exit(1)")),
        reply(None, ipython("print('restarted', 'x' in globals())")),
        reply(None, ipython("print(await rlm.run('child: probe'))")),
        reply("done"),
        match="root: strict",
    )
    model.script(reply(None, ipython(probe("child"))), reply("child done"), match="child: probe")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "PYTHONPATH": _python_path(),
        "RLM_BASE_URL": model.base_url,
        "RLM_API_KEY": "sk-strict-test",
        "RLM_MODEL": "scripted",
        "RLM_MAX_DEPTH": "1",
        "RLM_SANDBOX": "strict",
        "RLM_TOOLS": "ipython,bash",
        "RLM_EXEC_TIMEOUT": "60",
    }
    try:
        stderr = run_rlm(user, python, "root: strict", cwd=work, env=env)
        assert "rlm: sandbox strict (bubblewrap" in stderr, stderr
        root, child = _tool_texts(model, "root: strict"), _tool_texts(model, "child: probe")
        for name, texts in (("root", root), ("child", child)):
            assert _probe(texts) == {
                "cwd": "written",
                "outside": "EROFS",
                "system_file": "EROFS",
                "tmp": "written",
                "host_tmp_marker": False,
                "other_run_dir": False,
                "other_sessions": [],
                "processes": 2,  # bwrap's init and the kernel: nothing of the host
                "oom_score_adj": min(own_oom + 500, 1000),  # the OOM killer's first choice
                "network": "PermissionError" if abi_version() >= 4 else "OSError",
                "shell_outside": 2,
            }, name
        bang, cell, tool, slow, kept, died, restarted = root[2:9]
        assert "bang-denied" in bang and "bang-ok" in bang, bang
        assert "cell-denied" in cell and "cell-ok" in cell, cell
        assert "tool-denied" in tool and "tool-ok" in tool, tool
        assert "interrupted" in slow, slow
        assert "kept 42" in kept, kept  # message-mode interrupt: the kernel and x survived
        assert "restart" in died, died
        assert "restarted False" in restarted, restarted
        assert list(outside.iterdir()) == []
        assert not list(Path("/tmp").glob("private-*.txt"))
        names = {p.name for p in work.iterdir()}
        expected = {"inside-root.txt", "inside-child.txt", "inside-bang.txt", "inside-cell.txt"}
        assert expected | {"inside-tool.txt"} <= names, names
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        shutil.rmtree(other_run, ignore_errors=True)


def test_strict_without_bwrap_falls_back_to_workspace_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    bwrap.unusable.cache_clear()
    policy._warned.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="rlm.sandbox"):
            mode = policy.resolve_mode({"RLM_SANDBOX": "strict"})
    finally:
        bwrap.unusable.cache_clear()
    expected = "workspace" if abi_version() >= 1 else "off"
    assert mode == expected
    assert "RLM_SANDBOX=strict but bubblewrap (bwrap) is not installed" in caplog.text
    assert "falling back to the workspace sandbox" in caplog.text
