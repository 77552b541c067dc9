"""Shared fixtures: a scripted model over real HTTP and an isolated rlm environment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripted_model import ScriptedModel

#: ``RLM_TEST_SANDBOX=workspace|strict`` runs every rlm run the tests start (in-process and
#: CLI subprocesses, which inherit the environment) under that sandbox, to check that the
#: kernel tests pass with it on. Read once here: ``rlm_env`` clears every ``RLM_*`` variable.
TEST_SANDBOX = os.environ.get("RLM_TEST_SANDBOX", "").strip().lower()
if TEST_SANDBOX not in ("", "off", "workspace", "strict"):
    raise pytest.UsageError(
        f"RLM_TEST_SANDBOX: expected workspace or strict (got {TEST_SANDBOX!r})"
    )


@pytest.fixture(autouse=True)
def _test_sandbox(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply ``RLM_TEST_SANDBOX`` (see above) to tests that do not use ``rlm_env``. Tests
    that start kernels without an orchestrator (which sets a run's writable directories)
    get their ``tmp_path`` as the one writable directory, as a workspace."""
    if TEST_SANDBOX:
        monkeypatch.setenv("RLM_SANDBOX", TEST_SANDBOX)
        monkeypatch.setenv("RLM_SANDBOX_WRITABLE", str(request.getfixturevalue("tmp_path")))


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as server:
        yield server
    assert not server.errors, server.errors


@pytest.fixture
def rlm_env(model: ScriptedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point rlm at the scripted model, a private RLM_HOME and a scratch working directory."""
    for key in list(os.environ):
        if key.startswith("RLM_"):
            monkeypatch.delenv(key)
    if TEST_SANDBOX:
        monkeypatch.setenv("RLM_SANDBOX", TEST_SANDBOX)
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("RLM_BASE_URL", model.base_url)
    monkeypatch.setenv("RLM_API_KEY", "sk-test-secret-key")
    monkeypatch.setenv("RLM_MODEL", "scripted")
    monkeypatch.setenv("RLM_HOME", str(home))
    monkeypatch.setenv("RLM_SDK_MAX_RETRIES", "0")
    monkeypatch.setenv("RLM_RETRY_MAX_WAIT", "0.05")
    monkeypatch.setenv("RLM_EXEC_TIMEOUT", "30")
    monkeypatch.chdir(work)
    return home


def sessions(home: Path) -> list[Path]:
    """Root session folders, oldest first."""
    root = home / "sessions"
    return sorted(root.iterdir()) if root.exists() else []


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def read_log(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "messages.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
