"""The settings model: defaults, environment, overrides and one-line config errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

import rlm
from rlm.config import BUILTIN_TOOLS, Settings, env_name, flag_name, load_settings
from rlm.errors import ConfigError

#: Settings that take any text, so they have no invalid values to test.
FREE_TEXT = {"model", "base_url", "api_key", "append_to_system_prompt", "home", "mcp_config"}
FREE_TEXT |= {"kernel_gateway_token", "kernel_spec"}

#: A few invalid raw values (as they arrive from the environment or a flag) per setting.
BAD_VALUES: dict[str, list[str]] = {
    "max_turns": ["abc", "1.5", "", "0", "-3"],
    "max_depth": ["abc", "1.5", "-1"],
    "exec_timeout": ["abc", "", "0", "-1"],
    "max_output": ["abc", "1.5", "0", "-2"],
    "max_turns_in_context": ["abc", "0", "1", "-5"],
    "max_tokens": ["abc", "1.5", "-1"],
    "max_cost": ["abc", "-0.5", "nan", "inf"],
    "system_prompt_path": ["missing-prompt.md", "."],  # no such file; a directory
    "tools": ["nope", "ipython,nope", "IPYTHON"],
    "sdk_max_retries": ["abc", "-1"],
    "retry_attempts": ["abc", "0"],
    "retry_max_wait": ["abc", "-1"],
    "model_timeout": ["abc", "0", "-1"],
    "max_completion_tokens": ["abc", "-1", "1.5"],
    "context_window": ["abc", "-1", "1.5"],
    "max_reply_bytes": ["abc", "0", "1023"],
    "max_input_bytes": ["abc", "0", "-1"],
    "max_concurrency": ["abc", "0"],
    "llm_concurrency": ["abc", "0"],
    "kernel_start": ["warm", "", "Fork"],
    "kernel_pool": ["abc", "-1"],
    "control_transport": ["zmq", "", "IPC"],
    "max_message_bytes": ["abc", "0", "1048575"],
    "max_pending_bytes": ["abc", "-1", "1.5"],
    "max_pending_runs": ["abc", "-1"],
    "mcp_timeout": ["abc", "0", "-1"],
    "mcp_start_timeout": ["abc", "0", "-1"],
    "compact_at_tokens": ["abc", "-1", "1.5"],
    "max_compactions": ["abc", "-1"],
    "kernel_gateway": ["ftp://box", "box:8888", "http://user:secret@box:8888"],
    "kernel_gateway_token_file": ["missing-token", "."],
}

#: (env value, expected, override value, expected) per setting, all valid and non-default.
GOOD_VALUES: dict[str, tuple[str, Any, str, Any]] = {
    "model": ("model-env", "model-env", "model-flag", "model-flag"),
    "base_url": ("http://env/v1", "http://env/v1", "http://flag/v1", "http://flag/v1"),
    "max_turns": ("7", 7, "9", 9),
    "max_depth": ("2", 2, "3", 3),
    "exec_timeout": ("1.5", 1.5, "2", 2.0),
    "max_output": ("100", 100, "200", 200),
    "max_turns_in_context": ("2", 2, "5", 5),
    "max_tokens": ("1000", 1000, "2000", 2000),
    "max_cost": ("0.5", 0.5, "2", 2.0),
    "append_to_system_prompt": ("env text", "env text", "flag text", "flag text"),
    "system_prompt_path": ("env.md", Path("env.md"), "flag.md", Path("flag.md")),
    "tools": ("bash", ("bash",), "edit,ipython", ("edit", "ipython")),
    "home": ("env-home", Path("env-home"), "flag-home", Path("flag-home")),
    "sdk_max_retries": ("0", 0, "2", 2),
    "retry_attempts": ("1", 1, "3", 3),
    "retry_max_wait": ("0", 0.0, "1.5", 1.5),
    "model_timeout": ("2", 2.0, "0.5", 0.5),
    "max_completion_tokens": ("512", 512, "1024", 1024),
    "context_window": ("4096", 4096, "32768", 32768),
    "max_reply_bytes": ("4096", 4096, "65536", 65536),
    "max_input_bytes": ("1024", 1024, "2048", 2048),
    "max_concurrency": ("1", 1, "4", 4),
    "llm_concurrency": ("2", 2, "32", 32),
    "kernel_start": ("cold", "cold", "fork", "fork"),
    "kernel_pool": ("0", 0, "5", 5),
    "control_transport": ("ipc", "ipc", "auto", "auto"),
    "max_message_bytes": ("1048576", 1048576, "2097152", 2097152),
    "max_pending_bytes": ("0", 0, "1048576", 1048576),
    "max_pending_runs": ("1", 1, "10", 10),
    "mcp_config": ("env.json", Path("env.json"), "flag.json", Path("flag.json")),
    "mcp_timeout": ("5", 5.0, "0.5", 0.5),
    "mcp_start_timeout": ("10", 10.0, "2.5", 2.5),
    "compact_at_tokens": ("1000", 1000, "2000", 2000),
    "max_compactions": ("0", 0, "3", 3),
    "kernel_gateway": (
        "http://a:1",
        ("http://a:1",),
        "https://b,https://c",
        ("https://b", "https://c"),
    ),
    "kernel_gateway_token": ("tok-env", SecretStr("tok-env"), "tok-flag", SecretStr("tok-flag")),
    "kernel_gateway_token_file": ("env.md", Path("env.md"), "flag.md", Path("flag.md")),
    "kernel_spec": ("spec-env", "spec-env", "spec-flag", "spec-flag"),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RLM_* or API key variables from the developer's shell; a scratch cwd."""
    for key in list(os.environ):
        if key.startswith("RLM_") or key.upper() in (
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_MODEL",
            "API_KEY",
        ):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "env.md").write_text("env prompt")
    (tmp_path / "flag.md").write_text("flag prompt")
    for name in ("env.json", "flag.json"):
        (tmp_path / name).write_text('{"mcpServers": {}}')
    for spec in ("spec-env", "spec-flag"):  # RLM_KERNEL_SPEC must name an installed one
        folder = tmp_path / "jupyter" / "kernels" / spec
        folder.mkdir(parents=True)
        (folder / "kernel.json").write_text('{"argv": ["python3"], "display_name": "x"}')
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return tmp_path


def test_defaults_match_the_product_table():
    s = load_settings()
    assert s.model == "gpt-4o"
    assert s.max_turns == 30
    assert s.max_depth == 0
    assert s.exec_timeout == 300
    assert s.max_output == -1
    assert s.max_turns_in_context == -1
    assert s.max_tokens == 0
    assert s.tools == ("ipython", "summarize")
    assert s.home == Path(".rlm")
    assert s.sdk_max_retries == 0  # deprecated, ignored
    assert s.model_timeout == 300 and s.max_completion_tokens == 0
    assert s.api_key is None and s.key is None
    assert s.base_url is None
    assert s.append_to_system_prompt is None and s.system_prompt_path is None


def test_every_setting_is_covered_by_these_tests():
    fields = set(Settings.model_fields)
    assert fields == FREE_TEXT | set(BAD_VALUES), "add the new setting to BAD_VALUES/FREE_TEXT"
    assert fields - {"api_key"} == set(GOOD_VALUES), "add the new setting to GOOD_VALUES"


@pytest.mark.parametrize("field", sorted(GOOD_VALUES))
def test_each_setting_reads_its_env_var_and_an_override_wins(field, monkeypatch):
    env_value, env_expected, flag_value, flag_expected = GOOD_VALUES[field]
    monkeypatch.setenv(env_name(field), env_value)
    assert getattr(load_settings(), field) == env_expected
    assert getattr(load_settings(**{field: flag_value}), field) == flag_expected


def test_the_gateway_token_is_the_setting_else_the_token_file(clean_env, monkeypatch):
    (clean_env / "token").write_text("from-file\n")
    monkeypatch.setenv("RLM_KERNEL_GATEWAY_TOKEN_FILE", "token")
    assert load_settings().gateway_token == "from-file"
    monkeypatch.setenv("RLM_KERNEL_GATEWAY_TOKEN", "from-env")
    assert load_settings().gateway_token == "from-env"
    with pytest.raises(ConfigError, match="must not hold a user or password") as caught:
        load_settings(kernel_gateway="http://user:from-url@box")
    assert "from-url" not in str(caught.value)  # never quoted back


def test_none_overrides_are_ignored(monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "7")
    assert load_settings(max_turns=None, model=None).max_turns == 7


def test_an_override_wins_over_an_invalid_env_value(monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "abc")
    assert load_settings(max_turns="4").max_turns == 4


def test_api_key_falls_back_to_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert load_settings().key == "sk-openai"


def test_rlm_api_key_wins_over_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("RLM_API_KEY", "sk-rlm")
    s = load_settings()
    assert s.key == "sk-rlm"
    assert "sk-rlm" not in repr(s) and "sk-rlm" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("field", "rlm_name", "openai_name"),
    [("model", "RLM_MODEL", "OPENAI_MODEL"), ("base_url", "RLM_BASE_URL", "OPENAI_BASE_URL")],
)
def test_model_and_base_url_fall_back_to_openai_variables(
    field, rlm_name, openai_name, monkeypatch
):
    """What an RL harness sets (OPENAI_BASE_URL, OPENAI_MODEL) is used when RLM_* is not."""
    monkeypatch.setenv(openai_name, "http://openai/v1")
    assert getattr(load_settings(), field) == "http://openai/v1"
    monkeypatch.setenv(rlm_name, "http://rlm/v1")
    assert getattr(load_settings(), field) == "http://rlm/v1"
    assert getattr(load_settings(**{field: "http://flag/v1"}), field) == "http://flag/v1"


def test_a_bad_openai_model_names_its_variable(monkeypatch):
    monkeypatch.setenv("OPENAI_MODEL", " ")
    with pytest.raises(rlm.ConfigError, match=r"^OPENAI_MODEL: must not be empty"):
        load_settings()


def test_summarize_at_tokens_is_read_as_compact_at_tokens(monkeypatch):
    """The verifiers rlm harness sets RLM_SUMMARIZE_AT_TOKENS; RLM_COMPACT_AT_TOKENS wins."""
    monkeypatch.setenv("RLM_SUMMARIZE_AT_TOKENS", "500")
    assert load_settings().compact_at_tokens == 500
    monkeypatch.setenv("RLM_COMPACT_AT_TOKENS", "700")
    assert load_settings().compact_at_tokens == 700


def test_a_generic_api_key_variable_is_not_read(monkeypatch):
    monkeypatch.setenv("API_KEY", "sk-unrelated")
    assert load_settings().key is None
    monkeypatch.setenv("RLM_API_KEY", "sk-rlm")
    assert load_settings().key == "sk-rlm"


def test_empty_tools_gives_no_tools(monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    assert load_settings().tools == ()
    monkeypatch.setenv("RLM_TOOLS", " , ")
    assert load_settings().tools == ()
    assert load_settings(tools="").tools == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("summarize,ipython", ("summarize", "ipython")),
        (" bash , edit ,bash", ("bash", "edit")),
        ("ipython,,ipython,summarize,ipython", ("ipython", "summarize")),
        (",".join(reversed(BUILTIN_TOOLS)), tuple(reversed(BUILTIN_TOOLS))),
    ],
)
def test_tools_keep_their_order_and_are_deduplicated(raw, expected, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", raw)
    assert load_settings().tools == expected
    monkeypatch.delenv("RLM_TOOLS")
    assert load_settings(tools=raw).tools == expected


def test_tools_accept_a_sequence_override():
    assert load_settings(tools=["edit", "bash", "edit"]).tools == ("edit", "bash")


BAD_CASES = [(field, value) for field, values in BAD_VALUES.items() for value in values]


@pytest.mark.parametrize(("field", "value"), BAD_CASES)
def test_invalid_env_value_is_a_one_line_error_naming_the_variable(field, value, monkeypatch):
    monkeypatch.setenv(env_name(field), value)
    with pytest.raises(rlm.ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{env_name(field)}: "), message
    assert "\n" not in message


@pytest.mark.parametrize(("field", "value"), BAD_CASES)
def test_invalid_override_is_a_one_line_error_naming_the_flag(field, value):
    with pytest.raises(rlm.ConfigError) as caught:
        load_settings(**{field: value})
    message = str(caught.value)
    assert message.startswith(f"{flag_name(field)}: "), message
    assert env_name(field) not in message
    assert "\n" not in message


def test_config_error_explains_the_problem(monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "ipython,nope")
    with pytest.raises(rlm.ConfigError) as caught:
        load_settings()
    assert "unknown tool 'nope'" in str(caught.value)
    assert "ipython, summarize, bash, edit" in str(caught.value)
    monkeypatch.delenv("RLM_TOOLS")
    with pytest.raises(rlm.ConfigError, match=r"missing-prompt\.md"):
        load_settings(system_prompt_path="missing-prompt.md")


def test_several_invalid_values_are_reported_on_one_line(monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "0")
    monkeypatch.setenv("RLM_TOOLS", "nope")
    with pytest.raises(rlm.ConfigError) as caught:
        load_settings(max_output="0")
    message = str(caught.value)
    assert "RLM_MAX_TURNS" in message and "RLM_TOOLS" in message and "--max-output" in message
    assert "\n" not in message


def test_config_error_is_an_rlm_error():
    assert issubclass(rlm.ConfigError, rlm.RLMError)


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(ValidationError):
        s.max_turns = 3  # type: ignore[misc]


def test_a_bad_aliased_setting_in_a_project_file_names_the_file(clean_env: Path):
    """model and base_url have OPENAI_* aliases; an error names them only when they are set."""
    (clean_env / "rlm.toml").write_text('model = " "\n')
    with pytest.raises(rlm.ConfigError, match=r"rlm\.toml: model: must not be empty"):
        load_settings()
