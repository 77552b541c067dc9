"""``RLM_SANDBOX=workspace`` (Landlock): cells and bash commands write only in the working
directory and the run's private temp dir; ``RLM_NETWORK=off`` denies TCP. Skipped where the
kernel has no Landlock (the orchestrator then warns and runs unconfined, tested below)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlm.config import load_settings
from rlm.errors import ConfigError
from rlm.runtime.orchestrator import Orchestrator
from rlm.sandbox import policy
from rlm.sandbox.landlock import abi_version
from scripted_model import call, ipython, reply

needs_landlock = pytest.mark.skipif(abi_version() < 1, reason="no Landlock in this kernel")

CELL = r"""
import json, os, socket, subprocess, tempfile
def write(path):
    try:
        with open(path, 'w') as handle:
            handle.write('x')
        return 'written'
    except PermissionError:
        return 'PermissionError'
def connect(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=5).close()
        return 'connected'
    except PermissionError:
        return 'PermissionError'
    except OSError as exc:
        return type(exc).__name__
shell = subprocess.run(['sh', '-c', 'echo x > OUTSIDE/shell.txt'], capture_output=True)
print('PROBE', json.dumps({
    'cwd': write('inside.txt'),
    'tmp': write(os.path.join(tempfile.gettempdir(), 'scratch.txt')),
    'outside': write('OUTSIDE/cell.txt'),
    'shell_outside': shell.returncode,
    'network': connect(PORT),
}))
"""


def _probe(requests: list[dict]) -> dict:
    tools = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    found = [re.search(r"PROBE (\{.*\})", text) for text in tools]
    (probe,) = [json.loads(m.group(1)) for m in found if m]
    return probe


@needs_landlock
@pytest.mark.parametrize("start", ["cold", "fork"])
async def test_workspace_sandbox_confines_cells_and_bash(
    model, rlm_env, monkeypatch, tmp_path, start
):
    outside = tmp_path / "outside"
    outside.mkdir()
    port = int(model.base_url.rsplit(":", 1)[1].split("/")[0])
    monkeypatch.setenv("RLM_SANDBOX", "workspace")
    monkeypatch.setenv("RLM_NETWORK", "off")
    monkeypatch.setenv("RLM_KERNEL_START", start)
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_TOOLS", "ipython,bash")
    cell = CELL.replace("OUTSIDE", str(outside)).replace("PORT", str(port))
    bash = f"echo x > bash-inside.txt && echo ok; echo x > {outside}/bash.txt || echo denied"
    model.script(
        reply(None, ipython(cell)),
        reply(None, call("bash", {"command": bash})),
        reply(None, ipython("print(await rlm.run('child: probe'))")),
        reply("done"),
        match="root",
    )
    model.script(reply(None, ipython(cell)), reply("child done"), match="child: probe")
    async with Orchestrator(load_settings()) as orchestrator:
        assert orchestrator.sandbox == "workspace"
        assert await orchestrator.run("root: probe") == "done"
        # Confined kernels fork as before (no silent fall-back to cold starts).
        assert orchestrator.launcher.forking is (start == "fork")
    for agent in ("root", "child: probe"):
        probe = _probe(model.requests_for(agent))
        assert probe == {
            "cwd": "written",
            "tmp": "written",
            "outside": "PermissionError",
            "shell_outside": 2,
            "network": "PermissionError",
        }, agent
    bash_result = [m["content"] for m in model.requests_for("root")[-1]["messages"]
                   if m["role"] == "tool"][1]  # fmt: skip
    assert "ok" in bash_result and "denied" in bash_result, bash_result
    assert list(outside.iterdir()) == []
    assert (Path.cwd() / "inside.txt").exists() and (Path.cwd() / "bash-inside.txt").exists()


def test_bad_sandbox_values_are_one_clear_line():
    with pytest.raises(ConfigError, match=r"^RLM_SANDBOX: expected 'off', 'workspace' or 'strict'"):
        policy.resolve_mode({"RLM_SANDBOX": "docker"})
    with pytest.raises(ConfigError, match=r"^RLM_NETWORK: expected 'on' or 'off'"):
        policy.resolve_mode({"RLM_NETWORK": "none"})
    assert policy.resolve_mode({}) == "off"


def test_an_unconfined_run_tells_its_kernels_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's ``RLM_SANDBOX=workspace`` that fell back to ``off`` (no Landlock) must not
    reach the kernels: their start-up would try to confine them with no policy."""
    monkeypatch.setenv("RLM_SANDBOX", "workspace")
    env = policy.sandbox_env("off", cwd=tmp_path, run_dir=tmp_path)
    assert env["RLM_SANDBOX"] == "off"
