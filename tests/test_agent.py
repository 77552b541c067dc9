"""The agent loop on a real kernel, driven by the scripted model over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlm
from conftest import read_log, read_meta, sessions
from helpers import kernel_pids
from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import ScriptedModel, call, fault, ipython, reply


def tool_results(model: ScriptedModel) -> list[str]:
    """Tool messages the model received, in order (from the last request)."""
    return [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]


async def test_state_persists_across_calls_and_answer_is_returned(model, rlm_env):
    model.script(
        reply(None, ipython("x = 21")),
        reply(None, ipython("print(x * 2)")),
        reply("The answer is 42."),
    )
    assert await rlm.run("compute") == "The answer is 42."
    assert tool_results(model) == ["[no output]", "42"]


async def test_shell_escape_and_bash_cell(model, rlm_env):
    model.script(
        reply(None, ipython("!echo hello from shell")),
        reply(None, ipython("%%bash\necho one\necho two")),
        reply("done"),
    )
    await rlm.run("shell")
    assert tool_results(model) == ["hello from shell", "one\ntwo"]


async def test_exception_traceback_reaches_the_model(model, rlm_env):
    model.script(reply(None, ipython("def f():\n    return 1 / 0\nf()")), reply("saw it"))
    await rlm.run("fail")
    (result,) = tool_results(model)
    assert "ZeroDivisionError" in result and "division by zero" in result
    assert "\x1b[" not in result  # ANSI colour stripped


async def test_timeout_interrupts_and_state_survives(model, rlm_env, monkeypatch):
    model.script(
        reply(None, ipython("x = 'kept'")),
        reply(None, ipython("import time\nwhile True: time.sleep(0.01)", timeout=1)),
        reply(None, ipython("print(x)")),
        reply("ok"),
    )
    await rlm.run("loop")
    results = tool_results(model)
    assert "timed out after 1 s" in results[1] and "state kept" in results[1]
    assert results[2] == "kept"


async def test_kernel_death_is_reported_and_the_run_goes_on(model, rlm_env):
    model.script(
        reply(None, ipython("import os; os._exit(1)")),
        reply(None, ipython("print(1 + 1)")),
        reply("recovered"),
    )
    assert await rlm.run("die") == "recovered"
    results = tool_results(model)
    assert "kernel died (exit code 1)" in results[0] and "lost" in results[0]
    assert results[1] == "2"
    log = read_log(sessions(rlm_env)[0])
    assert any(line.get("event") == "kernel_restarted" for line in log)


async def test_output_is_capped_with_a_note(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_OUTPUT", "100")
    model.script(reply(None, ipython("print('x' * 1000)")), reply("ok"))
    await rlm.run("big")
    (result,) = tool_results(model)
    # head and tail: the first 50 and the last 50 characters (49 x's and the newline) kept
    head, note, tail = result.split("\n")
    assert head == "x" * 50 and tail == "x" * 49
    assert note == "[output truncated: 901 more characters dropped]"


async def test_capped_output_keeps_how_the_cell_ended(model, rlm_env, monkeypatch):
    """The tail survives the cap: a cell that prints a lot and then fails still shows the
    exception, after one note in the middle."""
    monkeypatch.setenv("RLM_MAX_OUTPUT", "1000")
    code = "print('START')\nfor i in range(2000):\n    print(i)\n1 / 0"
    model.script(reply(None, ipython(code)), reply("ok"))
    await rlm.run("big then fail")
    (result,) = tool_results(model)
    assert result.startswith("START\n0\n1\n")
    assert result.rstrip().endswith("ZeroDivisionError: division by zero"), result[-200:]
    assert result.count("[output truncated:") == 1
    assert len(result) < 1100


async def test_max_turns_stops_the_run(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "2")
    model.script(reply(None, ipython("1")), reply(None, ipython("2")))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("forever")
    assert caught.value.reason == "max_turns"
    meta = read_meta(sessions(rlm_env)[0])
    assert meta["status"] == "error" and meta["stop_reason"] == "max_turns"
    assert meta["turns"] == 2
    assert str(caught.value.session_path) in str(caught.value)


async def test_server_errors_are_retried_then_succeed(model, rlm_env):
    model.script(fault(500), fault(503), fault(429, headers={"Retry-After": "0"}), reply("fine"))
    assert await rlm.run("flaky") == "fine"
    assert len(model.requests) == 4


async def test_persistent_outage_gives_up_with_a_clear_error(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "2")
    model.script(fault(500), fault(500))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("down")
    assert caught.value.reason == "model_error"
    assert "after 2 attempts" in str(caught.value) and "HTTP 500" in str(caught.value)


async def test_bad_tool_calls_become_error_messages(model, rlm_env):
    model.script(
        reply(
            None,
            call("ipython", "{not json"),
            call("nope", {"x": 1}),
            call("ipython", {"timeout": 3}),
            ipython("print('still fine')"),
        ),
        reply("handled"),
    )
    assert await rlm.run("bad args") == "handled"
    messages = model.requests[-1]["messages"]
    assistant = next(m for m in messages if m["role"] == "assistant")
    tools = [m for m in messages if m["role"] == "tool"]
    # every call answered, in order, keyed by its id
    assert [t["tool_call_id"] for t in tools] == [c["id"] for c in assistant["tool_calls"]]
    assert "not valid JSON" in tools[0]["content"]
    assert "unknown tool 'nope'" in tools[1]["content"]
    assert "invalid arguments for ipython" in tools[2]["content"] and "code" in tools[2]["content"]
    assert tools[3]["content"] == "still fine"


async def test_empty_reply_gets_a_nudge(model, rlm_env):
    model.script(reply(None), reply("now an answer"))
    assert await rlm.run("quiet model") == "now an answer"
    last_user = [m for m in model.requests[-1]["messages"] if m["role"] == "user"][-1]
    assert "neither text nor a tool call" in last_user["content"]


async def test_session_folder_has_meta_and_log(model, rlm_env):
    model.script(reply(None, ipython("print('hi')")), reply("bye", usage=(11, 5)))
    await rlm.run("log me")
    (folder,) = sessions(rlm_env)
    meta = read_meta(folder)
    assert meta["id"] == folder.name
    assert meta["model"] == "scripted" and meta["depth"] == 0 and meta["status"] == "done"
    assert meta["task"] == "log me" and meta["answer"] == "bye" and meta["turns"] == 2
    assert meta["stop_reason"] == "answer" and meta["cwd"] == str(Path.cwd())
    assert meta["started_at"] <= meta["ended_at"]
    assert meta["usage"]["completion_tokens"] == 7 + 5
    log = read_log(folder)
    assert [line["role"] for line in log] == ["system", "user", "assistant", "tool", "assistant"]
    assert all("timestamp" in line for line in log)
    assert log[2]["tool_calls"][0]["function"]["name"] == "ipython"
    assert log[3]["tool_call_id"] == log[2]["tool_calls"][0]["id"]
    assert log[4]["usage"] == {"prompt_tokens": 11, "completion_tokens": 5}
    # the log holds exactly what the model was sent (plus log-only keys)
    sent = model.requests[-1]["messages"]
    log_only = ("timestamp", "usage", "finish_reason", "served_model", "response_id", "outputs")
    assert [{k: v for k, v in m.items() if k not in log_only} for m in log[:4]] == [
        {k: v for k, v in m.items() if v is not None or k == "content"} for m in sent
    ]
    assert "sk-test-secret-key" not in (folder / "messages.jsonl").read_text()
    assert "sk-test-secret-key" not in (folder / "meta.json").read_text()


async def test_no_kernel_process_is_left(model, rlm_env):
    model.script(reply(None, ipython("import os; print(os.getpid())")), reply("done"))
    async with Orchestrator(load_settings()) as orchestrator:
        marker = str(orchestrator.run_dir)
        await orchestrator.run("pid")
        assert kernel_pids(marker) == []
    pid = int(tool_results(model)[0])
    assert not Path(f"/proc/{pid}").exists()


async def test_tools_are_sent_as_function_tools(model, rlm_env):
    model.script(reply("no tools needed"))
    await rlm.run("hello")
    tools = model.requests[0]["tools"]
    assert [t["function"]["name"] for t in tools] == ["ipython", "summarize"]
    schema = tools[0]["function"]["parameters"]
    assert schema["required"] == ["code"] and "timeout" in schema["properties"]
    assert "%%bash" in tools[0]["function"]["description"]
    json.dumps(tools)
