"""Remote kernels through a real Jupyter Kernel Gateway on 127.0.0.1 (``RLM_KERNEL_GATEWAY``).

One gateway per module (it starts in a few seconds), with a token, in a working directory of
its own: a cell, ``bash`` and ``edit`` must see the gateway's directory, not the
orchestrator's. Kernels are listed through the gateway's REST API to prove they are gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rlm
from conftest import read_log, read_meta, sessions
from helpers import run_cli
from scripted_model import call, ipython, reply
from test_skills_in_kernel import fake_install

pytestmark = pytest.mark.timeout(120)


@dataclass
class Gateway:
    url: str
    token: str
    cwd: Path
    log: Path

    def kernels(self) -> list[dict]:
        request = urllib.request.Request(
            f"{self.url}/api/kernels", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the gateway accepts connections (it binds only once it is ready to serve)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the kernel gateway exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # the port is not open yet: probe again
    raise RuntimeError("the kernel gateway did not open its port")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cwd = tmp_path_factory.mktemp("remote")
    log = cwd.parent / "gateway.log"
    port, token = _free_port(), secrets.token_hex(16)
    # The gateway runs without any credential in its environment: what a remote kernel
    # inherits comes from the gateway's machine, never from the orchestrator.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "kernelgateway",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--KernelGatewayApp.auth_token={token}",
                "--JupyterWebsocketPersonality.list_kernels=True",
                # kernels nobody is connected to (their rlm was killed) go after 3 s
                "--MappingKernelManager.cull_idle_timeout=3",
                "--MappingKernelManager.cull_interval=1",
                "--MappingKernelManager.cull_busy=True",
            ],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc)
        yield Gateway(f"http://127.0.0.1:{port}", token, cwd, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def remote(gateway: Gateway, rlm_env: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """The run's kernels go to the gateway; no kernel is left from an earlier test."""
    monkeypatch.setenv("RLM_KERNEL_GATEWAY", gateway.url)
    monkeypatch.setenv("RLM_KERNEL_GATEWAY_TOKEN", gateway.token)
    assert gateway.kernels() == []
    return gateway


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


async def test_cells_keep_state_in_a_gateway_kernel_without_credentials(model, remote, rlm_env):
    probe = "import os, json\nprint(os.getcwd())\nprint(json.dumps(dict(os.environ)))\nstate = 41"
    model.script(
        reply(None, ipython(probe)), reply(None, ipython("print(state + 1)")), reply("done")
    )
    assert await rlm.run("remote task") == "done"
    first, second = tool_results(model.requests)
    cwd_line, environ = first.split("\n", 1)
    assert cwd_line == str(remote.cwd)  # the kernel's directory, not the orchestrator's
    assert second == "42"
    # no credential of the orchestrator, and not the gateway's token either
    assert "sk-test-secret-key" not in environ and remote.token not in environ
    env = json.loads(environ)
    assert "RLM_API_KEY" not in env and "RLM_KERNEL_GATEWAY_TOKEN" not in env
    assert env["RLM_DEPTH"] == "0"
    (root,) = sessions(rlm_env)
    meta = read_meta(root)
    assert meta["kernel"]["gateway"] == remote.url and meta["kernel"]["kernel_id"]
    assert remote.token not in (root / "meta.json").read_text()
    assert remote.token not in (root / "messages.jsonl").read_text()
    assert remote.kernels() == []  # deleted on the gateway when the run ended


async def test_a_timeout_interrupts_the_remote_cell_and_keeps_its_state(model, remote, monkeypatch):
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", "1.5")
    model.script(
        reply(None, ipython("x = 7\nimport time\ntime.sleep(60)")),
        reply(None, ipython("print(x)")),
        reply("done"),
    )
    started = time.monotonic()
    assert await rlm.run("remote task") == "done"
    first, second = tool_results(model.requests)
    assert "timed out after 1.5 s: execution interrupted, kernel state kept" in first
    assert second == "7"
    assert time.monotonic() - started < 30


async def test_a_remote_cell_that_ignores_the_interrupt_gets_a_restarted_kernel(
    model, remote, monkeypatch
):
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", "1")
    stubborn = (
        "z = 1\nimport time\nwhile True:\n    try:\n        time.sleep(30)\n"
        "    except KeyboardInterrupt:\n        pass"
    )
    model.script(
        reply(None, ipython(stubborn)),
        reply(None, ipython("print('z' in globals())")),
        reply("done"),
    )
    assert await rlm.run("remote task") == "done"
    first, second = tool_results(model.requests)
    assert "did not stop when interrupted: the kernel was restarted" in first
    assert second == "False"
    assert len(remote.kernels()) == 0


async def test_the_output_cap_applies_in_a_remote_kernel(model, remote, monkeypatch):
    monkeypatch.setenv("RLM_MAX_OUTPUT", "2000")
    model.script(reply(None, ipython("print('x' * 3_000_000)")), reply("done"))
    assert await rlm.run("remote task") == "done"
    (result,) = tool_results(model.requests)
    assert len(result) < 3000 and "truncated" in result


async def test_a_dead_remote_kernel_is_restarted_and_the_model_is_told(model, remote):
    model.script(
        reply(None, ipython("y = 1\nimport os\nos._exit(3)")),
        reply(None, ipython("print('y' in globals())")),
        reply("done"),
    )
    assert await rlm.run("remote task") == "done"
    first, second = tool_results(model.requests)
    assert "the kernel died; it was restarted and all variables and imports are lost" in first
    assert second == "False"


async def test_cancelling_a_run_deletes_its_remote_kernel(model, remote):
    marker = remote.cwd / "running"
    code = f"open({str(marker)!r}, 'w').close()\nimport time\ntime.sleep(60)"
    model.script(reply(None, ipython(code)), reply("never"))
    task = asyncio.ensure_future(rlm.run("remote task"))
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():  # the cell is running on the gateway
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.02)
        assert len(remote.kernels()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        marker.unlink(missing_ok=True)
    assert remote.kernels() == []


async def test_bash_and_edit_run_where_the_kernel_runs(model, remote, rlm_env):
    target = remote.cwd / "notes.txt"
    target.write_text("alpha\nbeta\n")
    (Path.cwd() / "notes.txt").write_text("local copy\n")
    model.script(
        reply(None, call("bash", {"command": "pwd; cat notes.txt; echo $RLM_API_KEY"})),
        reply(None, call("edit", {"path": "notes.txt", "old_str": "beta", "new_str": "gamma"})),
        reply(None, call("edit", {"path": "notes.txt", "old_str": "zeta", "new_str": "x"})),
        reply("done"),
    )
    try:
        assert await rlm.run("remote task", tools="bash,edit") == "done"
        shell, edited, refused = tool_results(model.requests)
        assert shell == f"{remote.cwd}\nalpha\nbeta\n\n[exit code: 0]"
        assert edited.startswith("Edited notes.txt (lines 2-2)")
        assert "old_str was not found in notes.txt" in refused
        assert target.read_text() == "alpha\ngamma\n"
        assert (Path.cwd() / "notes.txt").read_text() == "local copy\n"
    finally:
        target.unlink(missing_ok=True)


async def test_a_depth_two_tree_runs_every_kernel_on_the_gateway(
    model, remote, rlm_env, monkeypatch
):
    """Sub-agents, rlm.llm, a host function and inputs reach the orchestrator over the
    kernels' own channels through the gateway's websocket (a gateway kernel has no control
    socket address: nothing else could carry them)."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    # two URLs for the same gateway: kernels alternate between them
    other = remote.url.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("RLM_KERNEL_GATEWAY", f"{remote.url},{other}")
    calls: list[str] = []

    def record(label: str) -> str:
        calls.append(label)
        return f"recorded {label}"

    root_cell = (
        "import asyncio, os\n"
        "a, b = await asyncio.gather(\n"
        "    rlm.run('child: one', inputs={'blob': b'x' * 300_000}), rlm.run('child: two'))\n"
        "print(a, b, await rlm.llm('chunk: hi'), await record('root'),\n"
        "      'RLM_CONTROL_ADDR' in os.environ)"
    )
    model.script(reply(None, ipython(root_cell)), reply("root done"), match="root")
    # one child blocks its cell's thread in asyncio.run: the reply comes on the subshell
    children = {
        "one": "print(len(blob), asyncio.run(rlm.run('grandchild: one')))",
        "two": "print(await rlm.run('grandchild: two'))",
    }
    for name, cell in children.items():
        model.script(
            reply(None, ipython("import asyncio\n" + cell)),
            reply(f"child {name} done"),
            match=f"child: {name}",
        )
        model.script(reply(f"leaf {name}"), match=f"grandchild: {name}")
    model.script(reply("HI"), match="chunk: hi")
    assert await rlm.run("root task", functions=[record]) == "root done"
    assert tool_results(model.requests_for("root")) == [
        "child one done child two done HI recorded root False"
    ]
    assert tool_results(model.requests_for("child: one")) == ["300000 leaf one"]
    assert tool_results(model.requests_for("child: two")) == ["leaf two"]
    assert calls == ["root"]
    (root,) = sessions(rlm_env)
    metas = [read_meta(p.parent) for p in root.rglob("meta.json")]
    places = [m["kernel"] for m in metas if m.get("kernel")]
    assert len(places) >= 3  # root and both children (a leaf's kernel may start too)
    assert {p["gateway"] for p in places} == {remote.url, other}
    assert remote.kernels() == []


def test_a_bad_token_or_kernelspec_is_one_clear_line_before_the_run(model, remote, rlm_env):
    result = run_cli("task", env={"RLM_KERNEL_GATEWAY_TOKEN": "wrong"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rlm: RLM_KERNEL_GATEWAY: {remote.url} refused the token (HTTP 401); "
        "check RLM_KERNEL_GATEWAY_TOKEN or RLM_KERNEL_GATEWAY_TOKEN_FILE"
    )
    result = run_cli("task", env={"RLM_KERNEL_SPEC": "nope"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rlm: RLM_KERNEL_SPEC: {remote.url} has no kernelspec 'nope' (it has: python3)"
    )
    assert model.requests == [] and sessions(rlm_env) == []


async def test_a_skill_missing_where_the_kernel_runs_is_reported(
    model, remote, rlm_env, tmp_path, monkeypatch
):
    # installed for the orchestrator only: the gateway's kernels do not see this folder
    site = tmp_path / "site"
    fake_install(site, "shout", "async def run(text: str) -> str:\n    return text.upper()\n")
    monkeypatch.syspath_prepend(str(site))
    model.script(reply("done"))
    assert await rlm.run("remote task") == "done"
    assert "shout" not in model.requests[0]["messages"][0]["content"]  # not offered
    events = read_log(sessions(rlm_env)[0])
    (warning,) = [e for e in events if e.get("event") == "warning"]
    assert warning["message"].startswith(f"skill shout is not usable in the kernel at {remote.url}")
    assert "skills must be installed where the kernel runs" in warning["message"]
    assert "No module named 'shout'" in warning["message"]


def test_kernels_of_a_killed_rlm_are_culled_by_the_gateway(model, remote, rlm_env):
    marker = remote.cwd / "busy"
    code = f"open({str(marker)!r}, 'w').close()\nimport time\ntime.sleep(60)"
    model.script(reply(None, ipython(code)), reply("never"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "remote task"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():  # the cell runs on the gateway
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        assert len(remote.kernels()) == 1
        proc.kill()  # kill -9: nothing is left to delete the kernel
        proc.wait()
        deadline = time.monotonic() + 20
        while remote.kernels():  # the gateway's culling removes it
            assert time.monotonic() < deadline, remote.kernels()
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
        marker.unlink(missing_ok=True)


async def test_the_prompt_states_the_remote_kernels_working_directory(model, remote, rlm_env):
    """The model is told where its code and file tools run: the gateway's directory for its
    kernels, not the orchestrator's (the scratch directory the test runs in)."""
    model.script(reply("done"))
    assert await rlm.run("remote task") == "done"
    system = model.requests[0]["messages"][0]["content"]
    assert str(remote.cwd) in system
    assert str(Path.cwd()) not in system
    assert Path.cwd() != remote.cwd
