"""summarize, the context window, the token budget, tool selection and prompt controls."""

from __future__ import annotations

import pytest

import rlm
from conftest import read_log, read_meta, sessions
from scripted_model import call, ipython, reply


def roles(request: dict) -> list[str]:
    return [m["role"] for m in request["messages"]]


def contents(request: dict) -> list[str]:
    return [str(m.get("content")) for m in request["messages"]]


async def test_summarize_drops_oldest_turns_from_what_the_model_sees(model, rlm_env):
    model.script(
        reply(None, ipython("a = 'turn-one-output'; print(a)")),
        reply(None, ipython("print('turn-two-output')")),
        reply(None, call("summarize", {"num_turns": 2, "summary": "a holds turn-one-output"})),
        reply(None, call("summarize", {"num_turns": 1, "summary": "summarized once"})),
        reply("done"),
    )
    assert await rlm.run("task") == "done"
    after_first = model.requests[3]
    text = "\n".join(contents(after_first))
    assert "turn-one-output" not in text.replace("a holds turn-one-output", "")
    assert "turn-two-output" not in text
    assert "[turns 1-2] a holds turn-one-output" in text
    assert roles(after_first) == ["system", "user", "user", "assistant", "tool"]
    final = model.requests[4]
    summary = contents(final)[2]
    assert (
        "[turns 1-2] a holds turn-one-output" in summary
        and "[turns 3-3] summarized once" in summary
    )
    # the log keeps every message and records both summarize events
    log = read_log(sessions(rlm_env)[0])
    assert sum(1 for line in log if line.get("role") == "assistant") == 5
    assert any(
        "turn-one-output" in str(line.get("content")) for line in log if line.get("role") == "tool"
    )
    events = [line for line in log if line.get("event") == "summarize"]
    assert [e["turns"] for e in events] == [[1, 2], [3, 3]]


async def test_impossible_summarize_changes_nothing(model, rlm_env):
    model.script(
        reply(None, ipython("print('kept')")),
        reply(None, call("summarize", {"num_turns": 5, "summary": "too much"})),
        reply("done"),
    )
    await rlm.run("task")
    last = model.requests[-1]
    tool_texts = [m["content"] for m in last["messages"] if m["role"] == "tool"]
    assert tool_texts[0] == "kept"
    assert tool_texts[1].startswith("Error: cannot drop 5 turns: 1 turn(s) can be dropped")
    assert roles(last) == ["system", "user", "assistant", "tool", "assistant", "tool"]


async def test_summarize_can_flush_the_kernel(model, rlm_env):
    model.script(
        reply(None, ipython("x = 1")),
        reply(None, call("summarize", {"num_turns": 1, "summary": "s", "flush_repl_state": True})),
        reply(None, ipython("print('x' in globals())")),
        reply("done"),
    )
    await rlm.run("task")
    tools = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert "kernel was restarted" in tools[0]
    assert tools[1] == "False"
    assert any(line.get("reason") == "flush_repl_state" for line in read_log(sessions(rlm_env)[0]))


async def test_flush_option_absent_without_ipython(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "summarize")
    model.script(reply("ok"))
    await rlm.run("task")
    (tool,) = model.requests[0]["tools"]
    assert tool["function"]["name"] == "summarize"
    assert "flush_repl_state" not in tool["function"]["parameters"]["properties"]
    assert "ipython" not in model.requests[0]["messages"][0]["content"]


async def test_context_window_drops_old_turns_and_reports_fill(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS_IN_CONTEXT", "2")
    model.script(
        reply(None, ipython("print('first')")),
        reply(None, ipython("print('second')")),
        reply(None, ipython("print('third')")),
        reply("done"),
    )
    await rlm.run("task")
    second, third, last = model.requests[1], model.requests[2], model.requests[3]
    assert [m["content"] for m in second["messages"] if m["role"] == "tool"] == [
        "first\n[context turns: 1/2]"
    ]
    assert "first" in "\n".join(contents(third))
    text = "\n".join(contents(last))
    assert "first\n" not in text and "second" in text and "third" in text
    assert "1 older turn(s) were dropped" in text
    assert roles(last)[:3] == ["system", "user", "user"]
    log = read_log(sessions(rlm_env)[0])
    assert [e["dropped_turns"] for e in log if e.get("event") == "context_window"] == [1, 1]


async def test_token_budget_stops_the_run(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TOKENS", "15")
    model.script(
        reply(None, ipython("1"), usage=(5, 10)),
        reply(None, ipython("2"), usage=(5, 10)),
    )
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("task")
    assert caught.value.reason == "token_budget"
    meta = read_meta(sessions(rlm_env)[0])
    assert meta["stop_reason"] == "token_budget" and meta["usage"]["completion_tokens"] == 20


async def test_no_tools_means_a_plain_answer(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(reply("just text"))
    assert await rlm.run("task") == "just text"
    assert "tools" not in model.requests[0]
    assert "none: answer from what you know" in model.requests[0]["messages"][0]["content"]


async def test_unknown_tool_name_is_a_config_error(rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "ipython,telepathy")
    with pytest.raises(rlm.ConfigError, match="RLM_TOOLS: unknown tool 'telepathy'"):
        await rlm.run("task")


async def test_bash_and_edit_through_a_run(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "bash,edit")
    (rlm_env.parent / "work" / "f.txt").write_text("alpha\nbeta\n")
    model.script(
        reply(None, call("bash", {"command": "cat f.txt; echo oops >&2; exit 3"})),
        reply(None, call("edit", {"path": "f.txt", "old_str": "beta", "new_str": "gamma"})),
        reply(None, call("edit", {"path": "f.txt", "old_str": "zeta", "new_str": "x"})),
        reply("edited"),
    )
    assert await rlm.run("task") == "edited"
    assert [t["function"]["name"] for t in model.requests[0]["tools"]] == ["bash", "edit"]
    tools = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert tools[0].startswith("alpha\nbeta\noops") and "[exit code: 3]" in tools[0]
    assert "gamma" in tools[1]
    assert tools[2].startswith("Error:") and "0" in tools[2]
    assert (rlm_env.parent / "work" / "f.txt").read_text() == "alpha\ngamma\n"


async def test_prompt_append_replace_and_precedence(model, rlm_env, monkeypatch, tmp_path):
    replacement = tmp_path / "system.txt"
    replacement.write_text("You are a replaced prompt.")
    model.script(reply("a"), reply("b"))
    await rlm.run("task", append_to_system_prompt="Always run tests.")
    appended = model.requests[0]["messages"][0]["content"]
    assert appended.rstrip().endswith("Always run tests.") and "Working directory" in appended
    monkeypatch.setenv("RLM_APPEND_TO_SYSTEM_PROMPT", "Always run tests.")
    monkeypatch.setenv("RLM_SYSTEM_PROMPT_PATH", str(replacement))
    await rlm.run("task")
    assert model.requests[1]["messages"][0]["content"] == "You are a replaced prompt."


async def test_bash_does_not_see_the_api_key(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "bash")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-fallback")
    model.script(reply(None, call("bash", {"command": "env"})), reply("ok"))
    await rlm.run("task")
    (output,) = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert "RLM_HOME=" in output  # the environment is passed, minus credentials
    assert "sk-test-secret-key" not in output and "sk-openai-fallback" not in output


def test_resume_replay_skips_a_summarize_event_it_cannot_read():
    """A hand-edited log (a summarize event without its turn range) still resumes."""
    from rlm.agent.context import rebuild_context

    lines = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"event": "summarize", "summary": "lost its turns"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "two"},
    ]
    messages = rebuild_context(lines).messages()
    assert [m["content"] for m in messages] == ["sys", "first", "one", "second", "two"]
