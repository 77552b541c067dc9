"""Input-side faults: bad settings, an unusable RLM_HOME, a vanished working directory,
undecodable or enormous tasks. The user gets one clear line (exit 2) or a run that works;
never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import check_logs, tool_results, user_messages

import rlm
from conftest import read_meta, sessions
from helpers import run_cli
from rlm.cli.main import main as cli_main
from rlm.config import Settings, env_name, flag_name
from scripted_model import ipython, reply

#: Settings that take any text: no value is invalid when read (RLM_HOME and RLM_API_KEY are
#: tried at use below and in test_security_faults.py).
FREE_TEXT = {
    "model",
    "base_url",
    "api_key",
    "append_to_system_prompt",
    "home",
    "kernel_gateway_token",
}

#: Invalid raw values per setting, as they come from the environment or a flag.
INVALID: dict[str, list[str]] = {
    "max_turns": ["0", "-1", "abc", "", "1e3"],
    "max_depth": ["-1", "two", "1.5"],
    "exec_timeout": ["0", "-5", "nan", "soon"],
    "max_output": ["0", "-2", "10k"],
    "max_turns_in_context": ["0", "1", "-3"],
    "max_tokens": ["-1", "lots"],
    "max_cost": ["-1", "lots", "nan"],
    "system_prompt_path": ["does-not-exist.md", ".", "binary.md"],
    "tools": ["nope", "ipython,,nope", "IPYTHON", "ipython;bash"],
    "sdk_max_retries": ["-1", "x"],
    "retry_attempts": ["0", "x"],
    "retry_max_wait": ["-1", "nan", "soon"],
    "model_timeout": ["0", "nan", "soon"],
    "max_completion_tokens": ["-1", "many"],
    "context_window": ["-1", "many"],
    "max_reply_bytes": ["0", "1k"],
    "max_input_bytes": ["0", "-1", "1k"],
    "max_concurrency": ["0", "-4", "many"],
    "llm_concurrency": ["0", "-2", "many"],
    "kernel_start": ["warm", "", "FORK"],
    "kernel_pool": ["-1", "two"],
    "max_message_bytes": ["1000", "64M"],
    "max_pending_bytes": ["-1", "1GB"],
    "max_pending_runs": ["-1", "lots"],
    "compact_at_tokens": ["-1", "many"],
    "max_compactions": ["-1", "x"],
    "mcp_config": ["does-not-exist.json", ".", "binary.md"],
    "mcp_timeout": ["0", "nan", "soon"],
    "mcp_start_timeout": ["0", "-1", "soon"],
    "control_transport": ["zmq", "IPC"],
    "kernel_gateway": ["ftp://host:8888", "http://user:secret@host:8888", "not a url"],
    "kernel_gateway_token_file": ["does-not-exist.txt", "."],
    "kernel_spec": ["no-such-kernelspec-rlm-test"],
}

CASES = [(field, value) for field, values in INVALID.items() for value in values]


def test_every_setting_is_covered():
    """A new setting must come with invalid values here (or be declared free text)."""
    assert set(Settings.model_fields) == set(INVALID) | FREE_TEXT


@pytest.fixture
def work_files(rlm_env: Path) -> Path:
    Path("binary.md").write_bytes(b"\xff\xfe not utf-8 \x00")
    return rlm_env


def _assert_one_line_usage_error(code: int, out: str, err: str, name: str = "") -> None:
    """Exit 2, nothing on stdout, one line on stderr (``rlm: NAME: ...``), no traceback."""
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rlm: {name}: " if name else "rlm: "), lines[0]


@pytest.mark.parametrize(("field", "value"), CASES)
def test_invalid_env_value_is_a_usage_error(model, work_files, monkeypatch, capsys, field, value):
    monkeypatch.setenv(env_name(field), value)
    code = cli_main(["some task"])
    out, err = capsys.readouterr()
    _assert_one_line_usage_error(code, out, err, env_name(field))
    assert model.requests == [] and sessions(work_files) == []


@pytest.mark.parametrize(("field", "value"), CASES)
def test_invalid_flag_value_is_a_usage_error(model, work_files, capsys, field, value):
    code = cli_main([flag_name(field), value, "some task"])
    out, err = capsys.readouterr()
    _assert_one_line_usage_error(code, out, err, flag_name(field))
    assert model.requests == [] and sessions(work_files) == []


def test_invalid_values_through_the_real_command(model, work_files):
    """A bad value of each kind (integer, float, path, list) through ``python -m rlm``, side
    by side: exit 2, one line, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    procs = {}
    for field in ("max_turns", "exec_timeout", "system_prompt_path", "tools"):
        values = INVALID[field]
        procs[field] = subprocess.Popen(
            [sys.executable, "-m", "rlm", "some task"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, env_name(field): values[0]},
        )
    for field, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        _assert_one_line_usage_error(proc.returncode, out, err, env_name(field))
    assert model.requests == [] and sessions(work_files) == []


# -- RLM_HOME --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["home-is-a-file", "home-under-a-file", "sessions-is-a-file"])
def test_unusable_rlm_home_is_a_usage_error(model, rlm_env, tmp_path, layout):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    if layout == "home-is-a-file":
        home = blocker
    elif layout == "home-under-a-file":
        home = blocker / "home"
    else:
        home = tmp_path / "home2"
        home.mkdir()
        (home / "sessions").write_text("not a folder")
    result = run_cli("some task", env={"RLM_TOOLS": "", "RLM_HOME": str(home)})
    _assert_one_line_usage_error(result.returncode, result.stdout, result.stderr, "RLM_HOME")
    assert model.requests == []


async def test_unusable_rlm_home_raises_config_error_in_the_library(model, rlm_env, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    with pytest.raises(rlm.ConfigError, match="RLM_HOME"):
        await rlm.run("some task", tools="", home=str(blocker / "home"))
    assert model.requests == []


# -- the working directory -------------------------------------------------------------------


def test_missing_working_directory_is_a_usage_error(model, rlm_env, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m rlm "some task"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    _assert_one_line_usage_error(result.returncode, result.stdout, result.stderr)
    assert "working directory" in result.stderr
    assert model.requests == []


# -- undecodable and enormous tasks ----------------------------------------------------------


def _assert_task_survived(model, home: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == "understood\n"
    (task,) = user_messages(model.requests)
    assert task == "caf\ufffd task"  # the undecodable byte became U+FFFD, the rest is intact
    assert read_meta(sessions(home)[0])["task"] == "caf\ufffd task"
    check_logs(home)


def test_non_utf8_task_in_argv(model, rlm_env):
    model.script(reply("understood"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "-q", b"caf\xe9 task"],
        capture_output=True,
        env={**env, "RLM_TOOLS": ""},
        timeout=60,
    )
    _assert_task_survived(model, rlm_env, _decoded(result))


def test_non_utf8_task_on_stdin(model, rlm_env):
    model.script(reply("understood"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "-q"],
        input=b"caf\xe9 task\n",
        capture_output=True,
        env={**env, "RLM_TOOLS": ""},
        timeout=60,
    )
    _assert_task_survived(model, rlm_env, _decoded(result))


def _decoded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    result.stdout = result.stdout.decode("utf-8", "replace")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


async def test_lone_surrogate_task_in_the_library(model, rlm_env):
    model.script(reply("understood"))
    assert await rlm.run(os.fsdecode(b"caf\xe9 task"), tools="") == "understood"
    assert user_messages(model.requests) == ["caf\ufffd task"]
    check_logs(rlm_env)


async def test_enormous_task_goes_to_a_kernel_variable(model, rlm_env):
    task = "Count the lines of this log.\n" + "log line with some words in it\n" * 66_000
    assert len(task) > 2_000_000
    find = (
        "names = [n for n, v in globals().items() if isinstance(v, str) and len(v) == "
        f"{len(task)}]\nprint(names)"
    )
    model.script(reply(None, ipython(find)), reply("66000 lines"))
    assert await rlm.run(task) == "66000 lines"
    first = model.requests[0]
    assert sum(len(str(m["content"])) for m in first["messages"]) < 100_000
    (names,) = tool_results(model.requests)
    variable = names.strip("[]'")
    assert variable.isidentifier(), names
    assert f"`{variable}`" in user_messages(model.requests)[0]  # the prompt says where it is
    folder = sessions(rlm_env)[0]  # and the session keeps the whole task
    assert any(task.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    check_logs(rlm_env)
