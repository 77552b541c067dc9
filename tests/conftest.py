"""Shared fixtures: a scripted model over real HTTP and an isolated rlm environment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripted_model import ScriptedModel


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
