"""The ``rlm`` command as a subprocess, against the scripted model over real HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import read_meta, sessions
from helpers import run_cli
from rlm.cli.flags import NOT_FLAGS
from rlm.config import Settings, env_name, flag_name
from scripted_model import ScriptedModel, ipython, reply

SESSION_LINE = re.compile(r"^rlm: session (\S+) \((.+)\)$", re.MULTILINE)


def first_user_message(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def system_message(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


def tool_results(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def assert_usage_error(result, *names: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr naming every one of ``names``."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# -- runs ------------------------------------------------------------------------------------


def test_answer_alone_on_stdout_and_session_id_on_stderr(model: ScriptedModel, rlm_env: Path):
    model.script(reply(None, ipython("print(6 * 7)")), reply("The answer is 42."))
    result = run_cli("compute", "six", "times", "seven")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    (folder,) = sessions(rlm_env)
    match = SESSION_LINE.search(result.stderr)
    assert match, result.stderr
    assert match.group(1) == folder.name
    assert Path(match.group(2)) == folder
    meta = read_meta(folder)
    assert meta["id"] == folder.name and meta["answer"] == "The answer is 42."
    assert tool_results(model.requests[-1]) == ["42"]
    assert "sk-test-secret-key" not in result.stdout + result.stderr


def test_prompt_words_are_joined(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")  # no kernel needed
    model.script(reply("joined"))
    result = run_cli("count", "the", "  words", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "joined\n" and result.stderr == ""
    assert first_user_message(model.requests[0]) == "count the   words"
    assert read_meta(sessions(rlm_env)[0])["task"] == "count the   words"


def test_max_turns_exits_1_with_a_one_line_reason(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "1")
    model.script(reply(None, ipython("1 + 1")))
    result = run_cli("forever", "--quiet")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlm: ") and "RLM_MAX_TURNS" in lines[0]
    assert "Traceback" not in result.stderr
    (folder,) = sessions(rlm_env)
    assert str(folder) in lines[0]
    assert read_meta(folder)["stop_reason"] == "max_turns"


def test_double_dash_makes_a_command_name_the_prompt(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(reply("a prompt, not a command"))
    result = run_cli("--", "skill")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a prompt, not a command\n"
    assert first_user_message(model.requests[0]) == "skill"


def test_piped_stdin_runs_one_task_per_line(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(reply("answer one"), reply("answer two"))
    # blank lines are skipped; /exit ends the loop before "never run"
    stdin = "first task\n\n   \nsecond task\n/exit\nnever run\n"
    result = run_cli("-q", input=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "answer one\nanswer two\n"
    assert len(model.requests) == 2
    # the lines are turns of one conversation: one session, the second turn sees the first
    users = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["first task", "second task"]
    assert len(sessions(rlm_env)) == 1


# -- inputs ----------------------------------------------------------------------------------


def test_input_file_becomes_a_kernel_variable_described_not_shown(model, rlm_env):
    text = "CONFIDENTIAL-LINE\n" * 50
    Path("doc.txt").write_text(text)
    Path("notes.md").write_text("short")
    model.script(
        reply(None, ipython("print(len(doc), type(doc).__name__, notes)")),
        reply("read it"),
    )
    result = run_cli(
        "--input", "doc=doc.txt", "--input", f"notes={Path('notes.md').resolve()}", "go"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "read it\n"
    assert tool_results(model.requests[-1]) == [f"{len(text)} str short"]
    prompt = system_message(model.requests[0])
    assert f"`doc`: str, {len(text):,} characters" in prompt
    assert "`notes`: str, 5 characters" in prompt
    assert "CONFIDENTIAL-LINE" not in prompt
    assert all("CONFIDENTIAL-LINE" not in first_user_message(b) for b in model.requests)


@pytest.mark.parametrize(
    ("spec", "name"),
    [("doc=missing.txt", "missing.txt"), ("no-equals-sign", "NAME=PATH")],
)
def test_bad_input_exits_2(model, rlm_env, spec, name):
    Path("f.txt").write_text("x")
    line = assert_usage_error(run_cli("--input", spec, "task"), "--input", name)
    assert line.startswith("rlm: ")
    assert model.requests == []
    assert sessions(rlm_env) == []


# -- configuration errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"RLM_MAX_TURNS": "abc"}, "RLM_MAX_TURNS"),
        ({"RLM_TOOLS": "ipython,nope"}, "RLM_TOOLS"),
        ({"RLM_SYSTEM_PROMPT_PATH": "missing.md"}, "RLM_SYSTEM_PROMPT_PATH"),
    ],
)
def test_bad_env_value_exits_2_naming_the_variable(model, rlm_env, env, name):
    assert_usage_error(run_cli("task", env=env), name)
    assert model.requests == []


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--max-turns", "0"], "--max-turns"),
        (["--max-turns-in-context", "1"], "--max-turns-in-context"),
        (["--tools", "nope"], "--tools"),
    ],
)
def test_bad_flag_value_exits_2_naming_the_flag(model, rlm_env, args, name):
    env = {env_name(name.removeprefix("--").replace("-", "_")): "5"}  # a valid env value loses
    line = assert_usage_error(run_cli(*args, "task", env=env), name)
    assert "RLM_" not in line
    assert model.requests == []


@pytest.mark.parametrize("args", [["--bogus", "task"], ["--api-key", "sk-x", "task"]])
def test_unknown_flag_exits_2(model, rlm_env, args):
    line = assert_usage_error(run_cli(*args), "unrecognized arguments", args[0])
    assert "--help" in line
    assert model.requests == []


# -- help and system prompt ------------------------------------------------------------------


def test_help_lists_every_setting_with_its_flag_and_env_var(model, rlm_env):
    result = run_cli("--help", env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    options = text[text.index("options:") :]
    for field in Settings.model_fields:
        if field in NOT_FLAGS:  # secrets: never a flag (visible in ps)
            continue
        flag, env = flag_name(field), env_name(field)
        # the flag's own entry (metavar, help) names its env var before the next entry's does
        assert re.search(rf"{re.escape(flag)} [A-Z]+ (?:(?!\(env ).)*\(env {env},", options), (
            flag,
            env,
        )
    assert "--api-key" not in text
    assert "RLM_API_KEY" in text and "OPENAI_API_KEY" in text
    assert model.requests == []


def test_print_system_prompt_does_not_call_the_model(model, rlm_env):
    result = run_cli("--print-system-prompt", "--max-turns", "12")
    assert result.returncode == 0, result.stderr
    prompt = result.stdout
    assert prompt.startswith("You are an autonomous agent")
    assert f"Working directory: {Path.cwd().resolve()}" in prompt
    assert "- `ipython`:" in prompt and "- `summarize`:" in prompt and "`bash`" not in prompt
    assert "at most 12 turns" in prompt
    assert model.requests == []
    assert sessions(rlm_env) == []


def test_print_system_prompt_reflects_the_append(model, rlm_env):
    env = {"RLM_APPEND_TO_SYSTEM_PROMPT": "FROM THE ENVIRONMENT"}
    result = run_cli(
        "--print-system-prompt", "--append-to-system-prompt", "ALWAYS BE BRIEF", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("You are an autonomous agent")
    assert result.stdout.endswith("\n\nALWAYS BE BRIEF\n")
    assert "FROM THE ENVIRONMENT" not in result.stdout
    assert model.requests == []


def test_system_prompt_path_replaces_the_prompt_and_wins_over_append(model, rlm_env):
    Path("custom.md").write_text("You are a custom agent.\nLine two.\n")
    result = run_cli(
        "--print-system-prompt",
        "--system-prompt-path",
        "custom.md",
        "--append-to-system-prompt",
        "IGNORED",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You are a custom agent.\nLine two.\n"
    assert model.requests == []


def test_missing_system_prompt_path_exits_2(model, rlm_env):
    result = run_cli("--print-system-prompt", "--system-prompt-path", "nope.md")
    assert_usage_error(result, "--system-prompt-path", "nope.md")
    assert model.requests == []


def test_a_tmpdir_too_long_for_the_control_socket_is_one_line_before_the_run(
    model, rlm_env, tmp_path
):
    # The control socket is bound only when the first kernel is needed, but its path is
    # checked when the run opens: an answer without any tool call does not hide the problem.
    model.script(reply("done"))
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    result = run_cli("-q", "task", env={"TMPDIR": str(deep)})
    line = assert_usage_error(result, "control socket", "TMPDIR")
    assert str(deep) in line
    assert model.requests == []
