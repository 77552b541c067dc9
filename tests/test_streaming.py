"""Streamed completions: the text is seen as the model writes it, the reply is the same.

Through the real ``openai`` SDK and real HTTP to the scripted model (which streams SSE as
OpenAI does, a word per chunk when slow); endpoint variants are sent verbatim with ``raw``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import rlm
from helpers import run_cli
from rlm.agent import events as ev
from rlm.agent.model import DeltaKind, ModelClient
from rlm.config import load_settings
from rlm.errors import ModelError
from scripted_model import call, drop, not_json, raw, reply

MESSAGES = [{"role": "user", "content": "hi"}]
SSE = {"Content-Type": "text/event-stream"}


def sse(*chunks: Any, done: bool = True) -> str:
    """An SSE body of these chunk objects (``data: [DONE]`` last unless ``done=False``)."""
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    return "".join(lines) + ("data: [DONE]\n\n" if done else "")


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


async def complete(**kwargs: Any) -> tuple[Any, list[tuple[DeltaKind, str, float]]]:
    """One request through ModelClient; the reply and each delta with its arrival time."""
    seen: list[tuple[DeltaKind, str, float]] = []
    client = ModelClient(load_settings())
    try:
        result = await client.complete(
            MESSAGES,
            [],
            "m",
            on_delta=lambda kind, text: seen.append((kind, text, time.monotonic())),
            **kwargs,
        )
    finally:
        await client.close()
    return result, seen


async def test_text_and_reasoning_arrive_in_pieces_before_the_reply_ends(model, rlm_env):
    text = "one two three four five six"
    model.script(reply(text, reasoning="let me think", usage=(11, 5), chunk_delay=0.1))
    result, seen = await complete()
    ended = time.monotonic()
    assert result.message["content"] == text
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 5)
    assert "".join(t for k, t, _ in seen if k is DeltaKind.TEXT) == text
    assert "".join(t for k, t, _ in seen if k is DeltaKind.REASONING) == "let me think"
    assert len([k for k, _, _ in seen if k is DeltaKind.TEXT]) == 6  # a word at a time
    assert ended - seen[0][2] >= 0.5  # the first word came well before the end
    body = model.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_tool_calls_are_assembled_from_their_pieces(model, rlm_env):
    model.script(reply("", call("ipython", {"code": "print(1 + 1)"}, id="c1")))
    result, seen = await complete()
    (tool,) = result.message["tool_calls"]
    assert tool["id"] == "c1" and tool["function"]["name"] == "ipython"
    assert json.loads(tool["function"]["arguments"]) == {"code": "print(1 + 1)"}
    written = "".join(t for k, t, _ in seen if k is DeltaKind.TOOL_CALL)
    assert written == tool["function"]["arguments"]
    assert result.finish_reason == "tool_calls"


async def test_endpoint_variants_of_a_stream_are_read(model, rlm_env):
    """No ``index`` on tool calls, arguments as an object (Ollama), ``reasoning`` (vLLM),
    text parts, usage in a chunk with no choices, no ``[DONE]``."""
    body = sse(
        {"id": "r1", "model": "served", **delta(role="assistant", reasoning="hm")},
        delta(content=[{"type": "text", "text": "a"}, "b"]),
        delta(tool_calls=[{"id": "x", "function": {"name": "f", "arguments": {"k": 1}}}]),
        delta(tool_calls=[{"id": "y", "function": {"name": "g", "arguments": ""}}]),
        delta(tool_calls=[{"function": {"arguments": '{"z": 2}'}}]),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
        done=False,
    )
    model.script(raw(body, headers=SSE))
    result, seen = await complete()
    assert result.message["content"] == "ab"
    calls = [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in result.message["tool_calls"]
    ]
    assert calls == [("x", "f", '{"k": 1}'), ("y", "g", '{"z": 2}')]
    assert (result.id, result.model, result.usage.completion_tokens) == ("r1", "served", 4)
    assert [(k, t) for k, t, _ in seen][:1] == [(DeltaKind.REASONING, "hm")]


async def test_a_plain_json_answer_to_a_streamed_request_is_read(model, rlm_env):
    plain = {"choices": [{"message": {"role": "assistant", "content": "plain"}}]}
    model.script(raw(plain))
    result, seen = await complete()
    assert result.message["content"] == "plain" and seen == []


async def test_an_endpoint_that_refuses_streaming_is_asked_plainly_for_the_rest_of_the_run(
    model, rlm_env
):
    model.refuse_streaming = True
    model.script(reply("first"), reply("second"))
    retries: list[Any] = []
    client = ModelClient(load_settings())
    try:
        one = await client.complete(MESSAGES, [], "m", on_retry=lambda *a: retries.append(a))
        two = await client.complete(MESSAGES, [], "m", on_retry=lambda *a: retries.append(a))
    finally:
        await client.close()
    assert (one.message["content"], two.message["content"]) == ("first", "second")
    assert [bool(r.get("stream")) for r in model.requests] == [True, False, False]
    assert retries == []


async def test_other_refusals_are_not_mistaken_for_streaming(model, rlm_env):
    model.script(raw({"error": {"message": "bad model name"}}, status=400))
    with pytest.raises(ModelError, match="HTTP 400"):
        await complete()
    assert len(model.requests) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("data: {not json\n\n", "the reply is not JSON"),
        (
            sse({"error": {"message": "overloaded"}}),
            "the endpoint answered with an error: overloaded",
        ),
        (sse(delta(content=7)), "choices.0.delta.content: should be a string"),
        (sse({"choices": []}), "the reply had no choices"),
        (sse(delta(tool_calls=[{"id": "c"}])), "tool call without a function"),
    ],
)
async def test_a_broken_stream_fails_like_a_broken_body(model, rlm_env, monkeypatch, body, message):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "1")
    model.script(raw(body, headers=SSE))
    with pytest.raises(ModelError) as caught:
        await complete()
    assert message in str(caught.value)


async def test_a_stream_cut_midway_is_retried_and_streamed_again(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "2")
    model.script(drop(partial=True), reply("whole answer"))
    result, seen = await complete()
    assert result.message["content"] == "whole answer"
    assert "".join(t for k, t, _ in seen if k is DeltaKind.TEXT).endswith("whole answer")


async def test_a_stream_over_the_reply_cap_is_refused(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_REPLY_BYTES", "2048")
    model.script(reply("word " * 1000))
    with pytest.raises(ModelError, match="RLM_MAX_REPLY_BYTES"):
        await complete()


async def test_agents_emit_the_deltas_of_their_turns(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(reply("streamed answer here", reasoning="why"))
    events: list[ev.Event] = []
    answer = await rlm.run("task", on_event=events.append)
    deltas = [e for e in events if isinstance(e, ev.ModelDelta)]
    assert answer == "streamed answer here"
    assert "".join(d.text for d in deltas if d.part is DeltaKind.TEXT) == answer
    assert {d.turn for d in deltas} == {1} and deltas[0].depth == 0
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ModelRequest") < kinds.index("ModelDelta") < kinds.index("ModelResponse")


def test_events_lines_carry_the_text(model, rlm_env):
    model.script(not_json(), reply("a b c", chunk_delay=0.01))
    result = run_cli("--events", "task", env={"RLM_TOOLS": ""})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    texts = [x["text"] for x in lines if x["event"] == "ModelDelta" and x["part"] == "text"]
    assert "".join(texts) == "a b c" and len(texts) == 3
