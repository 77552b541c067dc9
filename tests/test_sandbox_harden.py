"""Orchestrator hardening (issue #15, always on): the credential filter, the endpoint URL
kept out of logs, the orchestrator's own environment block, control secrets and connection
files out of other kernels' reach, owner-only session logs.

What needs a second, unprivileged uid to mean anything (non-dumpable processes) is in
tests/test_sandbox_unprivileged.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import sessions
from rlm.config import load_settings
from rlm.errors import ConfigError
from rlm.kernels.environment import check_kernel_env, is_credential, kernel_environment
from rlm.kernels.launcher import KernelLauncher
from rlm.runtime.orchestrator import Orchestrator
from rlm.sandbox.harden import redact_url
from scripted_model import ipython, reply

#: The credentials issue #15 found reaching every kernel, plus the classic ones.
ISSUE_CREDENTIALS = [
    "ANTHROPIC_AUTH_TOKEN",
    "AZURE_OPENAI_AD_TOKEN",
    "OPENAI_ADMIN_KEY",
    "HUGGINGFACEHUB_API_TOKEN",
    "HF_API_TOKEN",
    "LITELLM_MASTER_KEY",
    "AWS_BEARER_TOKEN_BEDROCK",
    "OPENAI_API_KEY_2",
    "RLM_BASE_URL",
    "OPENAI_BASE_URL",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "GITHUB_TOKEN",
    "DB_PASSWORD",
    "CLIENT_SECRET",
    "my_service_api_key",
    "RLM_API_KEY",
    "OPENAI_API_KEY",
]


@pytest.mark.parametrize("name", ISSUE_CREDENTIALS)
def test_credentials_are_filtered_from_kernels(name):
    env = kernel_environment({name: "planted-value", "PATH": "/usr/bin", "HARMLESS": "1"})
    assert env == {"PATH": env["PATH"], "HARMLESS": "1"}
    assert env["PATH"].endswith(os.pathsep + "/usr/bin")  # rlm's Python folder goes first
    assert is_credential(name)


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "TOKENIZERS_PARALLELISM", "KEYBOARD", "RLM_MODEL"]
)
def test_ordinary_variables_pass(name):
    env = kernel_environment({name: "x"})
    assert set(env) <= {name, "PATH"}
    # PATH keeps the user's folders, after rlm's Python folder (so !pip is the kernel's)
    assert env[name].split(os.pathsep)[-1] == "x"


def test_the_allow_list_passes_named_credentials_but_a_glob_never_the_model_key():
    source = {
        "RLM_KERNEL_ENV_ALLOW": "GITHUB_TOKEN, AWS_*, *",
        "GITHUB_TOKEN": "gh",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "RLM_API_KEY": "model-key",
        "OPENAI_BASE_URL": "https://u:p@host/v1",
    }
    env = kernel_environment(source)
    assert env["GITHUB_TOKEN"] == "gh"
    assert env["AWS_SECRET_ACCESS_KEY"] == "aws"
    assert "RLM_API_KEY" not in env and "OPENAI_BASE_URL" not in env
    named = kernel_environment({**source, "RLM_KERNEL_ENV_ALLOW": "RLM_API_KEY"})
    assert named["RLM_API_KEY"] == "model-key"


def test_minimal_kernel_env_keeps_only_the_basics_and_the_allow_list():
    source = {
        "RLM_KERNEL_ENV": "minimal",
        "RLM_KERNEL_ENV_ALLOW": "PROJECT_DIR",
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "RLM_MODEL": "m",
        "RLM_API_KEY": "model-key",
        "PROJECT_DIR": "/src",
        "UNRELATED": "x",
    }
    env = kernel_environment(source)
    assert set(env) == {"RLM_KERNEL_ENV", "RLM_KERNEL_ENV_ALLOW", "PATH", "LC_ALL", "RLM_MODEL",
                        "PROJECT_DIR"}  # fmt: skip


def test_an_unknown_kernel_env_mode_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"^RLM_KERNEL_ENV: expected 'inherit' or 'minimal'"):
        check_kernel_env({"RLM_KERNEL_ENV": "empty"})
    check_kernel_env({"RLM_KERNEL_ENV": "minimal"})
    check_kernel_env({})


def test_the_cli_refuses_an_unknown_kernel_env_mode(model, rlm_env):
    from helpers import run_cli

    result = run_cli("hello", "-q", env={"RLM_KERNEL_ENV": "none"})
    assert result.returncode != 0
    assert "RLM_KERNEL_ENV: expected" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@example.com:8443/v1?api-key=k#x", "https://example.com:8443/v1"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("https://[::1]:9/v1?key=1", "https://[::1]:9/v1"),
        (None, None),
    ],
)
def test_an_endpoint_url_is_shown_without_credentials(url, shown):
    assert redact_url(url) == shown


def test_the_orchestrator_wipes_credentials_from_its_environment_block():
    """``/proc/<pid>/environ`` of the orchestrator (readable by root cells) no longer holds
    the key; ``os.environ`` still does, for the program embedding rlm, and so do its
    subprocesses."""
    code = (
        "import os, subprocess, json\n"
        "from rlm.sandbox.harden import harden_orchestrator, is_dumpable\n"
        "harden_orchestrator()\n"
        "proc = open('/proc/self/environ', 'rb').read().decode()\n"
        "sub = subprocess.run(['sh', '-c', 'echo $RLM_API_KEY'], capture_output=True, text=True)\n"
        "print(json.dumps({'proc': proc, 'environ': os.environ.get('RLM_API_KEY'),\n"
        "                  'sub': sub.stdout.strip(), 'dumpable': is_dumpable()}))\n"
    )
    env = {**os.environ, "RLM_API_KEY": "sk-orchestrator-key-123", "GH_TOKEN": "gh-tok-456"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout)
    assert "sk-orchestrator-key-123" not in seen["proc"]
    assert "gh-tok-456" not in seen["proc"]
    assert "RLM_API_KEY=" in seen["proc"]  # the name stays, the value is overwritten
    assert seen["environ"] == "sk-orchestrator-key-123"
    assert seen["sub"] == "sk-orchestrator-key-123"
    assert seen["dumpable"] is False


PROBE = r"""
import glob, json, os
from ipykernel.kernelapp import IPKernelApp
environ = open('/proc/self/environ', 'rb').read().split(b'\0')
print('PROBE', json.dumps({
    'secret_in_environ': any(e.startswith(b'RLM_AGENT_SECRET=') for e in environ),
    'secret_in_os_environ': 'RLM_AGENT_SECRET' in os.environ,
    'own_connection_file': os.path.exists(IPKernelApp.instance().abs_connection_file),
    'connection_files': sorted(os.path.basename(p) for p in glob.glob(RUN_DIR + '/*.json')),
    'base_url': [k for k in os.environ if k.endswith('BASE_URL')],
}))
"""


def _probes(requests: list[dict]) -> list[dict]:
    tools = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    found = [re.search(r"PROBE (\{.*\})", text) for text in tools]
    return [json.loads(m.group(1)) for m in found if m]


@pytest.mark.parametrize("start", ["cold", "fork"])
async def test_control_secrets_and_connection_files_are_out_of_reach(
    model, rlm_env, monkeypatch, start
):
    """Neither the kernel's initial environment nor the run dir holds what another same-uid
    process needs to drive an agent (its control secret, its kernel's signing key); the
    control channel still works (the child answers)."""
    monkeypatch.setenv("RLM_KERNEL_START", start)
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_BASE_URL", model.base_url + "?api-key=in-the-url")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:hunter22@example.com/v1")
    async with Orchestrator(load_settings(base_url=model.base_url)) as orchestrator:
        probe = PROBE.replace("RUN_DIR", repr(str(orchestrator.run_dir)))
        spawn = "print(await rlm.run('child: probe'))"
        model.script(reply(None, ipython(probe)), reply(None, ipython(spawn)), reply("done"),
                     match="root")  # fmt: skip
        model.script(reply(None, ipython(probe)), reply("child done"), match="child: probe")
        assert await orchestrator.run("root: probe") == "done"
    seen = _probes(model.requests_for("root")) + _probes(model.requests_for("child: probe"))
    assert len(seen) == 2
    for probe_result in seen:
        assert probe_result["secret_in_environ"] is False
        assert probe_result["secret_in_os_environ"] is False
        assert probe_result["own_connection_file"] is False
        assert [n for n in probe_result["connection_files"] if n.startswith("k")] == []
        assert probe_result["base_url"] == []
    assert "child done" in json.dumps(model.requests_for("root")[-1])
    for path in rlm_env.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "in-the-url" not in text and "hunter22" not in text, path


@pytest.fixture
async def pool_launcher(request, tmp_path: Path) -> AsyncIterator[KernelLauncher]:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    launcher = KernelLauncher(
        run_dir,
        cwd=tmp_path,
        env=kernel_environment(),
        mode=request.param,
        pool_size=1,
        preload=[],
    )
    if request.param == "fork":
        await launcher.start_zygote()
        assert launcher.zygote is not None
        await launcher.zygote.ready()
    try:
        yield launcher
    finally:
        await launcher.close()


@pytest.mark.parametrize("pool_launcher", ["cold", "fork"], indirect=True)
async def test_a_waiting_pooled_kernel_leaves_no_connection_file(pool_launcher):
    """The pooled-kernel plant of issue #15 started from the pooled kernel's connection file;
    it is gone once the kernel is up, and again after a restart (which still works)."""
    assert pool_launcher.pool is not None
    pool_launcher.pool.activate()
    kernel = await pool_launcher.pool.take()
    assert kernel is not None
    try:
        assert list(pool_launcher.run_dir.glob("*.json")) == []
        await kernel.restart()
        assert list(pool_launcher.run_dir.glob("*.json")) == []
        result = await kernel.execute("print(6 * 7)", timeout=30)
        assert result.output.strip() == "42"
    finally:
        await kernel.shutdown()


async def test_session_logs_are_owner_only_whatever_the_umask(model, rlm_env):
    model.script(reply("hi"))
    old = os.umask(0o022)
    try:
        async with Orchestrator(load_settings(tools="")) as orchestrator:
            assert await orchestrator.run("hello") == "hi"
    finally:
        os.umask(old)
    (folder,) = sessions(rlm_env)
    assert stat.S_IMODE((rlm_env / "sessions").stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("meta.json", "messages.jsonl"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
