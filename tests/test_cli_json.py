"""``rlm --json``: stdout gets exactly one JSON object however the run ends.

Scripts read ``reason`` to tell a configuration mistake from a model outage or a cap; the
exit codes stay those of the plain CLI (2 configuration, 1 no answer, 130/143 signals).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import read_meta, sessions
from helpers import run_cli
from scripted_model import ScriptedModel, fault, ipython, reply, wait

KEYS = {"result", "error", "reason", "session", "usage", "cost"}


def one_record(stdout: str) -> dict[str, Any]:
    """The single JSON object stdout must hold (one line), with exactly the documented keys."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    record = json.loads(lines[0])
    assert isinstance(record, dict) and set(record) == KEYS, record
    return record


def test_an_answer_is_one_record_with_reason_answer(model: ScriptedModel, rlm_env: Path):
    model.script(reply(None, ipython("print(6 * 7)")), reply("42"))
    result = run_cli("--json", "-q", "compute")
    assert result.returncode == 0, result.stderr
    record = one_record(result.stdout)
    (folder,) = sessions(rlm_env)
    assert record["result"] == "42" and record["error"] is None
    assert record["reason"] == "answer"
    assert Path(record["session"]) == folder
    assert set(record["usage"]) == {"prompt_tokens", "completion_tokens"}


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--resume", "no-such-session"], {}, "no-such-session"),
        (["--max-turns", "0"], {}, "--max-turns"),
        ([], {"RLM_MAX_TURNS": "abc"}, "RLM_MAX_TURNS"),
        (["--input", "doc=missing.txt"], {}, "missing.txt"),
        (["--context", "missing.json"], {}, "missing.json"),
        ([], {"RLM_HOME": "a-file"}, "RLM_HOME"),
        (["--bogus"], {}, "--bogus"),
    ],
    ids=[
        "unknown-resume-id",
        "bad-flag",
        "bad-env",
        "missing-input",
        "missing-context",
        "home",
        "unknown-flag",
    ],
)
def test_a_configuration_error_is_one_record_with_reason_config(
    model: ScriptedModel, rlm_env: Path, args: list[str], env: dict[str, str], named: str
):
    Path("a-file").write_text("not a folder")
    if "RLM_HOME" in env:
        env = {"RLM_HOME": str(Path("a-file").resolve())}
    result = run_cli("--json", *args, "task", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    record = one_record(result.stdout)
    assert record["reason"] == "config"
    assert record["result"] is None and named in record["error"]
    assert "\n" not in record["error"]
    assert record["session"] is None and record["usage"] == {}
    assert model.requests == []


def test_a_model_error_is_one_record_with_reason_model_error(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(fault(400, '{"error": {"message": "bad request, do not retry"}}'))
    result = run_cli("--json", "-q", "task")
    assert result.returncode == 1, result.stderr
    record = one_record(result.stdout)
    (folder,) = sessions(rlm_env)
    assert record["reason"] == "model_error" == read_meta(folder)["stop_reason"]
    assert record["result"] is None and record["error"]
    assert Path(record["session"]) == folder


def test_max_turns_is_one_record_with_reason_max_turns(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "1")
    model.script(reply(None, ipython("1 + 1")))
    result = run_cli("--json", "-q", "forever")
    assert result.returncode == 1, result.stderr
    record = one_record(result.stdout)
    assert record["reason"] == "max_turns" and "RLM_MAX_TURNS" in record["error"]
    assert record["usage"]["completion_tokens"] > 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P needs 3.11")
def test_a_kernel_that_fails_at_start_is_one_record_with_reason_kernel_error(model, rlm_env):
    # rlm.py in the working directory shadows rlm inside the kernel (whose sys.path starts
    # with its cwd), so the kernel's bootstrap fails; -P keeps the CLI itself unaffected.
    Path("rlm.py").write_text("raise ImportError('shadowed on purpose')\n")
    Path("doc.txt").write_text("x")  # an input makes the agent wait for its kernel at start
    result = subprocess.run(
        [sys.executable, "-P", "-m", "rlm", "--json", "-q", "--input", "doc=doc.txt", "task"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    record = one_record(result.stdout)
    (folder,) = sessions(rlm_env)
    assert record["reason"] == "kernel_error"
    assert "shadowed on purpose" in record["error"]
    assert Path(record["session"]) == folder
    assert model.requests == []
    meta = read_meta(folder)  # the folder is closed with the reason, not left "running"
    assert meta["status"] == "error" and meta["stop_reason"] == "kernel_error"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_is_one_record_with_reason_interrupted(
    model, rlm_env, monkeypatch, signum, code
):
    monkeypatch.setenv("RLM_TOOLS", "")
    release = threading.Event()
    model.script(wait(release, reply("never")))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "--json", "-q", "a long task"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not model.requests and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the model request, not waiting for an outcome
        assert model.requests and proc.poll() is None, "rlm did not reach the model"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    record = one_record(out)
    (folder,) = sessions(rlm_env)
    assert record["reason"] == "interrupted" and record["result"] is None
    assert record["error"]
    assert Path(record["session"]) == folder
    assert read_meta(folder)["status"] == "cancelled"
