"""rlm against the servers people run, reproduced by the scripted model's personalities.

Each test replays what a real server did in a trial (issue 14) and checks that a run goes
on the way a user expects; the real llama-server itself is in test_real_server.py.
"""

from __future__ import annotations

import json

import pytest

import rlm
from conftest import read_log, sessions
from helpers import run_cli
from personalities import LLAMA_CPP_PYTHON, LLAMA_SERVER, STRICT_TEMPLATE, VLLM, Personality
from rlm.agent.context import rebuild_context
from rlm.agent.events import EndpointWarning, Event
from scripted_model import (
    ScriptedModel,
    cut_call,
    ipython,
    newline_call,
    raw,
    reply,
    text_call,
)


def tool_results(model: ScriptedModel) -> list[str]:
    return [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]


def warnings(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, EndpointWarning)]


# -- tool calls as the servers send them -----------------------------------------------------


async def test_a_call_cut_mid_arguments_does_not_wedge_a_reparsing_server(model, rlm_env):
    model.personality = LLAMA_SERVER
    model.script(
        cut_call("ipython", {"code": "print(next(iter([i for i in range(10)])))"}),
        ipython("print(3)"),
        reply("done"),
    )
    assert await rlm.run("cut call") == "done"
    assert tool_results(model)[-1] == "3"


async def test_raw_newlines_in_arguments_run_and_go_back_as_strict_json(model, rlm_env):
    model.personality = VLLM  # re-parses the history strictly
    model.script(newline_call("ipython", {"code": "x = 20\nprint(x + 22)"}), reply("42"))
    assert await rlm.run("multi-line code") == "42"
    assert tool_results(model) == ["42"]
    sent = next(m for m in model.requests[-1]["messages"] if m.get("tool_calls"))
    assert json.loads(sent["tool_calls"][0]["function"]["arguments"]) == {
        "code": "x = 20\nprint(x + 22)"
    }
    # the log keeps the arguments exactly as the server wrote them
    logged = next(line for line in read_log(sessions(rlm_env)[0]) if line.get("tool_calls"))
    assert "\n" in logged["tool_calls"][0]["function"]["arguments"]


async def test_llama_cpp_python_gets_string_content_and_tool_choice(model, rlm_env):
    model.personality = LLAMA_CPP_PYTHON
    model.script(ipython("print(6 * 7)"), reply("it is 42"))
    assert await rlm.run("tools please") == "it is 42"
    assert tool_results(model) == ["42"]


async def test_without_tool_choice_llama_cpp_python_hides_the_tools(model):
    """The personality itself: what rlm would get if it sent no ``tool_choice``."""
    import openai

    model.personality = LLAMA_CPP_PYTHON
    model.script(ipython("print(1)"))
    client = openai.OpenAI(base_url=model.base_url, api_key="x", max_retries=0)
    tools = [{"type": "function", "function": {"name": "ipython", "parameters": {}}}]
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], tools=tools
    )
    assert answer.choices[0].message.tool_calls is None


@pytest.mark.parametrize("form", ["hermes", "fenced", "bare"])
async def test_tool_calls_written_as_text_are_run(model, rlm_env, form):
    events: list[Event] = []
    model.script(
        text_call("ipython", {"code": "x = 6 * 7"}, form),
        text_call("ipython", {"code": "print(x)"}, form),
        reply("x is 42"),
    )
    assert await rlm.run("text calls", on_event=events.append) == "x is 42"
    assert tool_results(model) == ["[no output]", "42"]
    # sent back as structured calls, so the conversation stays valid for the server
    sent = [m for m in model.requests[-1]["messages"] if m["role"] == "assistant"]
    assert all(m["tool_calls"][0]["function"]["name"] == "ipython" for m in sent)
    assert all("tool_call>" not in m["content"] and "```" not in m["content"] for m in sent)
    # the log keeps the text as the server wrote it
    log = read_log(sessions(rlm_env)[0])
    written = [line["text_tool_calls"] for line in log if "text_tool_calls" in line]
    assert len(written) == 2 and '"x = 6 * 7"' in written[0]
    # warned once per run, on stderr and in the log
    said = warnings(events)
    assert len(said) == 1 and "--jinja" in said[0] and "--tool-call-parser" in said[0]
    assert [line["message"] for line in log if line.get("event") == "warning"] == said


async def test_text_naming_no_offered_tool_stays_an_answer(model, rlm_env):
    answer = '<tool_call>\n{"name": "web_search", "arguments": {"q": "x"}}\n</tool_call>'
    model.script(reply(answer))
    assert await rlm.run("not a call") == answer


async def test_text_calls_are_not_parsed_when_no_tools_are_offered(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    text = text_call("ipython", {"code": "print(1)"}).content
    model.script(reply(text))
    assert await rlm.run("no tools") == text


# -- context overflow ------------------------------------------------------------------------


@pytest.mark.parametrize("personality", [LLAMA_SERVER, VLLM], ids=["llama-server", "openai"])
async def test_overflow_is_explained_and_the_session_stays_usable(
    model, rlm_env, personality: Personality
):
    model.personality = Personality(
        personality.name, context_window=4096, overflow=personality.overflow
    )
    model.script(reply("small answer"))
    big = "word " * 8000  # ~10,000 tokens by the server's count, under MAX_INLINE_TASK
    async with rlm.Session() as session:
        with pytest.raises(rlm.AgentError) as caught:
            await session.send(big)
        message = str(caught.value)
        assert "context full (" in message and "> 4,096 tokens): /reset" in message
        assert "HTTP 400" not in message and len(model.requests) == 1  # not retried
        assert await session.send("a short question") == "small answer"
        folder = session.path
    # the failed message is gone from what the model is sent, now and after --resume
    assert all(big not in m.get("content", "") for m in model.requests[-1]["messages"])
    rebuilt = rebuild_context(read_log(folder)).messages()
    assert [m["content"] for m in rebuilt if m["role"] == "user"] == ["a short question"]


async def test_a_known_context_window_moves_long_messages_to_a_variable(
    model, rlm_env, monkeypatch
):
    monkeypatch.setenv("RLM_CONTEXT_WINDOW", "4096")
    model.personality = Personality("small", context_window=4096)
    model.script(ipython("print(len(task))"), reply("read it"))
    big = "word " * 2000  # 10,000 characters: inline it would be about 2,500 tokens
    assert await rlm.run(big) == "read it"
    assert tool_results(model) == ["10000"]
    task = next(m for m in model.requests[0]["messages"] if m["role"] == "user")
    assert "the variable `task`" in task["content"] and len(task["content"]) < 5000


# -- smaller: empty replies, unknown usage -----------------------------------------------------


async def test_empty_reply_nudge_keeps_a_strict_template_valid(model, rlm_env):
    model.personality = STRICT_TEMPLATE
    model.script(reply(""), reply("now an answer"))
    assert await rlm.run("quiet model") == "now an answer"
    log = read_log(sessions(rlm_env)[0])
    assert any(line.get("role") == "assistant" and line["content"] == "" for line in log)


def _no_usage(content: str) -> object:
    return raw(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
        }
    )


async def test_unknown_usage_is_null_and_a_budget_says_it_cannot_apply(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TOKENS", "1000")
    events: list[Event] = []
    model.script(_no_usage(""), _no_usage("fine"))
    assert await rlm.run("no usage", on_event=events.append) == "fine"
    said = warnings(events)
    assert len(said) == 1 and "token budget (RLM_MAX_TOKENS) cannot apply" in said[0]
    replies = [line for line in read_log(sessions(rlm_env)[0]) if line.get("role") == "assistant"]
    assert [r["usage"] for r in replies] == [{"prompt_tokens": None, "completion_tokens": None}] * 2


def test_the_cli_warns_once_on_stderr_about_text_tool_calls(model, rlm_env):
    model.script(
        text_call("ipython", {"code": "x = 1"}),
        text_call("ipython", {"code": "print(x + 1)"}),
        reply("two"),
    )
    result = run_cli("text calls")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "two"
    warned = [line for line in result.stderr.splitlines() if "rlm: warning:" in line]
    assert len(warned) == 1 and "structured tool_calls" in warned[0], result.stderr
