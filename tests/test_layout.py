"""The process rule seen from outside: what ``import rlm`` and ``rlm sessions`` really load.

A kernel, every skill's console script and ``rlm sessions`` start a fresh Python that imports
rlm. Loading zmq, jupyter_client or the openai client there costs start-up time for nothing
(and ``rlm sessions`` must work where no kernel stack runs). import-linter (contracts in
pyproject.toml) checks the static imports; these tests check what a real process ends up with
in ``sys.modules``, lazy imports and third-party imports included.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import rlm
from conftest import sessions
from helpers import model_env
from scripted_model import ScriptedModel, ipython, reply, wait

#: Heavy or orchestrator-only modules that ``import rlm`` must leave to whoever needs them.
NOT_ON_IMPORT = ("zmq", "jupyter_client", "openai", "pydantic")
#: What ``rlm sessions`` must never load: the kernel stack and the model client.
NOT_IN_SESSIONS = ("zmq", "jupyter_client", "openai", "rlm.runtime", "rlm.control")

#: Runs ``python -m rlm ARGS`` unchanged and writes ``sorted(sys.modules)`` at exit to argv[1].
_CLI_PROBE = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "rlm"
runpy.run_module("rlm", run_name="__main__", alter_sys=True)
"""


def loaded(names: tuple[str, ...], modules: list[str]) -> list[str]:
    """The modules of ``modules`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def fresh_env() -> dict[str, str]:
    """The test's environment without anything that makes rlm think it runs in a kernel."""
    return {k: v for k, v in os.environ.items() if k not in ("RLM_CONTROL_ADDR", "PYTHONSTARTUP")}


def modules_after(statements: str) -> list[str]:
    """``sorted(sys.modules)`` of a fresh Python that ran ``statements``."""
    code = f"import json, sys\n{statements}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=fresh_env(),
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(result.stdout)
    return modules


@pytest.mark.parametrize("statement", ["import rlm", "import rlm.skill"])
def test_import_rlm_loads_no_kernel_stack_model_client_or_pydantic(statement: str) -> None:
    modules = modules_after(statement)
    assert "rlm" in modules
    assert loaded(NOT_ON_IMPORT, modules) == []


@pytest.fixture(scope="module")
def finished_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real run (kernel, scripted model over HTTP): a session with a cell and an answer.

    Returns ``(RLM_HOME, session id)``."""
    base = tmp_path_factory.mktemp("layout")
    home, work = base / "home", base / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as mp, ScriptedModel() as model:
        for key in list(os.environ):
            if key.startswith("RLM_"):
                mp.delenv(key)
        mp.setenv("RLM_BASE_URL", model.base_url)
        mp.setenv("RLM_API_KEY", "sk-test-secret-key")
        mp.setenv("RLM_MODEL", "scripted")
        mp.setenv("RLM_HOME", str(home))
        mp.chdir(work)
        model.script(reply(None, ipython("print(6 * 7)")), reply("forty-two"))
        assert asyncio.run(rlm.run("compute 6 * 7")) == "forty-two"
        assert not model.errors, model.errors
    (folder,) = sessions(home)
    return home, folder.name


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["tree", "{id}"],
        ["show", "{id}"],
        ["export", "{id}", "--format", "jsonl"],
        ["export", "{id}", "--format", "ipynb", "-o", "{tmp}/nb"],
    ],
    ids=["list", "tree", "show", "export-jsonl", "export-ipynb"],
)
def test_rlm_sessions_loads_no_kernel_stack_or_model_client(
    command: list[str], finished_session: tuple[Path, str], tmp_path: Path
) -> None:
    home, session_id = finished_session
    out = tmp_path / "modules.json"
    args = [part.format(id=session_id, tmp=tmp_path) for part in command]
    result = subprocess.run(
        [sys.executable, "-c", _CLI_PROBE, str(out), "sessions", *args],
        capture_output=True,
        text=True,
        env={**fresh_env(), "RLM_HOME": str(home)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the command printed nothing: it did not read the session"
    modules = json.loads(out.read_text())
    assert "rlm.logs.store" in modules
    assert loaded(NOT_IN_SESSIONS, modules) == []


#: What a one-shot ``rlm -q TASK`` must not have imported when it sends its first model
#: request: the live view's terminal library, notebook export, the YAML parser (skills'
#: front matter only), and the orchestrator's kernel side (Jupyter's client, ZeroMQ,
#: traitlets, IPython, the kernel launcher, control server and gateway client: imported once
#: the request is on the wire, while the prestarted root kernel initialises). Each is
#: start-up time before the first request for nothing. (tornado is not listed: tenacity,
#: the retry library, imports it whenever it is installed.)
NOT_BEFORE_FIRST_REQUEST = (
    "rich",
    "nbformat",
    "yaml",
    "rlm.cli.live",
    "rlm.logs.render",
    "jupyter_client",
    "jupyter_core",
    "zmq",
    "traitlets",
    "IPython",
    "ipykernel",
    "rlm.kernels.base",
    "rlm.kernels.kernel",
    "rlm.kernels.launcher",
    "rlm.kernels.gateway",
    "rlm.kernels.gateway_client",
    "rlm.kernels.fork_client",
    "rlm.control.channel",
    "rlm.zygote",
)

#: Runs ``python -m rlm ARGS`` and, at its first connection to port argv[2] (the model
#: server), writes ``sorted(sys.modules)`` to argv[1] (an audit hook: nothing of rlm is
#: replaced).
_FIRST_REQUEST_PROBE = """
import json, runpy, sys
out, port = sys.argv.pop(1), int(sys.argv.pop(1))
def hook(event, args):
    if event == "socket.connect" and out and isinstance(args[1], tuple) and args[1][1] == port:
        open(out, "w").write(json.dumps(sorted(sys.modules)))
        globals()["out"] = ""
sys.addaudithook(hook)
sys.argv[0] = "rlm"
runpy.run_module("rlm", run_name="__main__", alter_sys=True)
"""


def _run_probe(
    model: ScriptedModel, tmp_path: Path, probe: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``rlm`` run through ``probe`` (``python -c probe ARGS``) against ``model``."""
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        env=model_env(model.base_url, tmp_path / "home", fresh_env()),
        cwd=tmp_path,
        timeout=120,
    )


def test_one_shot_run_imports_only_what_its_first_request_needs(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    with ScriptedModel() as model:
        model.script(reply("done"))
        port = model.base_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        result = _run_probe(model, tmp_path, _FIRST_REQUEST_PROBE, str(out), port, "-q", "hello")
        assert result.returncode == 0, result.stderr
        assert not model.errors, model.errors
    assert result.stdout.strip() == "done"
    modules = json.loads(out.read_text())
    assert "rlm.agent.transport" in modules, "the probe did not see the model request"
    assert loaded(NOT_BEFORE_FIRST_REQUEST, modules) == []


#: Runs ``python -m rlm ARGS`` and writes one byte to the pipe fd argv[1] when the CLI starts
#: importing Jupyter's client, the kernel side's first import (an audit hook on the import
#: event; nothing is replaced).
_KERNEL_SIDE_PROBE = """
import os, runpy, sys
fd = int(sys.argv.pop(1))
def hook(event, args):
    global fd
    if event == "import" and args[0] == "jupyter_client" and fd >= 0:
        os.write(fd, b"x")
        os.close(fd)
        fd = -1
sys.addaudithook(hook)
sys.argv[0] = "rlm"
runpy.run_module("rlm", run_name="__main__", alter_sys=True)
"""


def test_the_kernel_side_starts_while_the_first_request_waits_for_its_reply(
    tmp_path: Path,
) -> None:
    # Deferred past the first request, but not past its reply: the endpoint holds the reply
    # (a tool call) until the kernel side's imports have begun, which must happen meanwhile.
    read, write = os.pipe()
    begun = threading.Event()
    with ScriptedModel() as model:
        model.script(wait(begun, then=reply(None, ipython("print(6 * 7)"))), reply("done"))
        env = model_env(model.base_url, tmp_path / "home", fresh_env())
        proc = subprocess.Popen(
            [sys.executable, "-c", _KERNEL_SIDE_PROBE, str(write), "-q", "hello"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            pass_fds=(write,),
        )
        os.close(write)
        try:
            ready, _, _ = select.select([read], [], [], 60)
            signalled = bool(ready) and os.read(read, 1) == b"x"
            held = len(model.requests) == 1  # the first request is still the only one
        finally:
            os.close(read)
            begun.set()
            out, err = proc.communicate(timeout=120)
        assert signalled, "the kernel side did not start while the first request waited"
        assert held
        assert proc.returncode == 0, err
        assert not model.errors, model.errors
    assert out.strip() == "done"
    (result,) = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert "42" in result


def test_a_successful_run_never_imports_the_sdk(tmp_path: Path) -> None:
    # Requests go out with the SDK's HTTP library (rlm.agent.transport); openai itself, the
    # largest import of a run, is imported only to raise its exception when a request fails.
    out = tmp_path / "modules.json"
    with ScriptedModel() as model:
        model.script(reply(None, ipython("print(6 * 7)")), reply("done"))
        result = _run_probe(model, tmp_path, _CLI_PROBE, str(out), "-q", "compute 6 * 7")
        assert result.returncode == 0, result.stderr
        assert not model.errors, model.errors
        assert len(model.requests) == 2
    assert result.stdout.strip() == "done"
    modules = json.loads(out.read_text())
    assert "rlm.agent.transport" in modules
    assert loaded(("openai",), modules) == []
