"""One resolver of session ids for ``rlm --resume`` and ``rlm sessions``: a reference is a
folder name under ``$RLM_HOME/sessions`` (exact or unique prefix), never a path or a glob."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli
from rlm.logs.store import SessionError, find_session
from scripted_model import ScriptedModel

IDS = ("20261130-101500-aaaaaa", "20261130-101500-bbbbbb", "20261130-111111-cccccc")


def fake_session(folder: Path) -> Path:
    """A finished session folder, readable by both ``--resume`` and ``rlm sessions``."""
    folder.mkdir(parents=True)
    meta = {"id": folder.name, "status": "done", "task": "old task", "stop_reason": "answer"}
    (folder / "meta.json").write_text(json.dumps(meta))
    lines = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "old task"},
        {"role": "assistant", "content": "old answer"},
    ]
    (folder / "messages.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture
def home(rlm_env: Path) -> Path:
    for name in IDS:
        fake_session(rlm_env / "sessions" / name)
    fake_session(rlm_env / "outside")  # reachable as ../outside from sessions/
    return rlm_env


def one_line_exit_2(result, *needles: str) -> str:
    assert result.returncode == 2, result
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("../outside", "not a session id"),
        ("*", "not a session id"),
        ("2026*", "not a session id"),
        ("20261130-11111?-cccccc", "not a session id"),
        ("ABSOLUTE", "not a session id"),
        ("20261130-1015", "ambiguous"),
        ("nope", "no session matches 'nope'"),
    ],
    ids=["dotdot", "star", "glob-prefix", "question-mark", "absolute", "ambiguous", "unknown"],
)
def test_resume_takes_only_a_folder_name_or_unique_prefix(
    model: ScriptedModel, home: Path, ref: str, needle: str
):
    if ref == "ABSOLUTE":
        ref = str(home / "sessions" / IDS[2])
    line = one_line_exit_2(run_cli("--resume", ref, "go on"), "--resume", needle)
    assert line.startswith("rlm: --resume: ")
    assert model.requests == []


@pytest.mark.parametrize("ref", ["../outside", "*", "ABSOLUTE", f"{IDS[2]}/../{IDS[0]}"])
def test_sessions_command_rejects_paths_and_globs_the_same_way(model, home, ref):
    if ref == "ABSOLUTE":
        ref = str(home / "sessions" / IDS[2])
    one_line_exit_2(run_cli("sessions", "show", ref), "not a session id")


def test_exact_id_unique_prefix_and_agent_paths_still_resolve(home: Path):
    assert find_session(home, IDS[2]).path == home / "sessions" / IDS[2]
    assert find_session(home, "20261130-11").path == home / "sessions" / IDS[2]
    assert find_session(home, IDS[2] + "/").path == home / "sessions" / IDS[2]
    child = fake_session(home / "sessions" / IDS[2] / "sub-123abc")
    assert find_session(home, f"{IDS[2]}/123").path == child
    with pytest.raises(SessionError, match="not a path"):
        find_session(home, f"{IDS[2]}/123", agents=False)


def test_resume_by_unique_prefix_continues_that_session(model, home, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script("continued")
    result = run_cli("--resume", "20261130-11", "-q", "go on")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "continued\n"
    users = [m["content"] for m in model.requests[0]["messages"] if m["role"] == "user"]
    assert users[0] == "old task" and users[-1].endswith("go on")
