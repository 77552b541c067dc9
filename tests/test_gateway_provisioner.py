"""Kernels started by a gateway_provisioners provisioner (``RLM_KERNEL_SPEC``), Curve-encrypted.

The kernelspec is the one ``jupyter-ssh-spec install`` writes (``DistributedProvisioner``)
with ``GP_REMOTE_HOSTS=localhost``: the provisioner then starts the kernel without ssh, through
the same launcher script and response socket it uses on a remote host, so no sshd is needed.
It refuses ``KERNEL_USERNAME=root``, so the tests send a user name.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rlm
from conftest import read_meta, sessions
from helpers import kernel_pids
from scripted_model import call, ipython, reply

pytestmark = pytest.mark.timeout(120)

SPEC = "rlm_distributed"


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("gp")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway_provisioners.cli.ssh_specapp",
            "install",
            f"--prefix={prefix}",
            f"--kernel-name={SPEC}",
            "--remote-hosts=localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return prefix / "share" / "jupyter"


@pytest.fixture
def provisioned(spec_path: Path, rlm_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_PATH", str(spec_path))
    monkeypatch.setenv("RLM_KERNEL_SPEC", SPEC)
    monkeypatch.setenv("GP_REMOTE_HOSTS", "localhost")
    monkeypatch.setenv("KERNEL_USERNAME", "rlm-test")
    return rlm_env


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


async def test_a_provisioned_kernel_is_encrypted_keeps_state_and_runs_the_tools(
    model, provisioned, spec_path, monkeypatch
):
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", "20")
    probe = (
        "import json, os\n"
        "from ipykernel.kernelapp import IPKernelApp\n"
        "app = IPKernelApp.instance()\n"
        "print(json.dumps([app.shell_socket.curve_server, 'RLM_API_KEY' in os.environ, "
        "os.environ.get('RLM_DEPTH')]))\n"
        "kept = 3"
    )
    model.script(
        reply(None, ipython(probe)),
        reply(None, ipython("print(kept * 2)")),
        reply(None, call("bash", {"command": "echo from $RLM_DEPTH"})),
        reply(None, ipython("import time\ntime.sleep(60)", timeout=1)),
        reply(None, ipython("print(kept)")),
        reply(None, ipython("import os\nos._exit(1)")),
        reply(None, ipython("print('kept' in globals())")),
        reply("done"),
    )
    assert await rlm.run("provisioned task", tools="ipython,bash") == "done"
    first, second, shell, slow, after, died, fresh = tool_results(model.requests)
    curve_server, has_key, depth = json.loads(first)
    assert curve_server == 1 and not has_key and depth == "0"
    assert second == "6"
    assert shell == "from 0\n[exit code: 0]"
    assert "execution interrupted, kernel state kept" in slow and after == "3"
    # no local process tells that a provisioner's kernel died: its heartbeat does
    assert "the kernel died; it was restarted" in died and fresh == "False"
    # every process the provisioner started on this host is gone (its group was killed)
    began = time.monotonic()
    deadline = began + 10
    while kernel_pids(str(spec_path)):
        assert time.monotonic() < deadline, kernel_pids(str(spec_path))
        await asyncio.sleep(0.1)
    (root,) = sessions(provisioned)
    assert read_meta(root)["kernel"]["kernel_spec"] == SPEC
