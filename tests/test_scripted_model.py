"""Tests of the scripted chat-completions server, driven through the real ``openai`` SDK.

The rest of the suite trusts ``ScriptedModel`` to look like the real API to the SDK, so these
tests check exactly that: replies, streaming, tool calls, routing, and every failure mode map to
what the SDK really does with them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from scripted_model import (
    ScriptedModel,
    call,
    delay,
    drop,
    empty_choices,
    fault,
    ipython,
    not_json,
    reply,
    wait,
)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def client(model: ScriptedModel) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=model.base_url, api_key="test", max_retries=0, timeout=10)
    yield c
    c.close()


def user(task: str, *later: dict) -> list[dict]:
    return [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": task},
        *later,
    ]


def ask(client: openai.OpenAI, task: str = "task", **kw):
    return client.chat.completions.create(model="scripted", messages=user(task), **kw)


def collect_stream(chunks) -> dict:
    """Accumulate chat.completion.chunk deltas the way an agent would."""
    content, calls, finish, usage, roles = "", {}, None, None, []
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            d = choice.delta
            if d.role:
                roles.append(d.role)
            content += d.content or ""
            for tc in d.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = choice.finish_reason or finish
    return {
        "content": content,
        "calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
        "roles": roles,
    }


# ------------------------------------------------------------------------------ replies


def test_non_stream_content_reply(model, client):
    model.script(reply("Hello, world."))
    r = ask(client, "a" * 40)
    assert r.object == "chat.completion"
    assert r.model == "scripted"
    msg = r.choices[0].message
    assert (msg.role, msg.content, msg.tool_calls) == ("assistant", "Hello, world.", None)
    assert r.choices[0].finish_reason == "stop"
    # default usage: ("You are a test." = 15 chars + 40) // 4 = 13, completion 7
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (13, 7, 20)
    assert model.errors == []


def test_non_stream_tool_calls(model, client):
    model.script(
        reply("thinking", ipython("print(1)", timeout=5), call("search", {"q": "x"}, id="mine")),
        reply(None, ipython("2 + 2")),
    )
    r = ask(client)
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.content == "thinking"
    tcs = r.choices[0].message.tool_calls
    assert [(t.id, t.type, t.function.name) for t in tcs] == [
        ("call_1", "function", "ipython"),
        ("mine", "function", "search"),
    ]
    assert json.loads(tcs[0].function.arguments) == {"code": "print(1)", "timeout": 5}
    assert json.loads(tcs[1].function.arguments) == {"q": "x"}

    r2 = ask(client)
    assert r2.choices[0].message.content is None
    (tc,) = r2.choices[0].message.tool_calls
    assert tc.id == "call_2"  # auto ids are unique per server
    assert json.loads(tc.function.arguments) == {"code": "2 + 2"}  # timeout=None omitted
    assert model.errors == []


def test_explicit_usage_and_finish_reason(model, client):
    model.script(reply("cut", usage=(1000, 250), finish_reason="length"))
    r = ask(client)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        1000,
        250,
        1250,
    )
    assert r.choices[0].finish_reason == "length"


def test_shorthand_steps(model, client):
    model.script("plain text", ipython("x = 1"))
    assert ask(client).choices[0].message.content == "plain text"
    r = ask(client)
    assert r.choices[0].message.tool_calls[0].function.name == "ipython"
    assert r.choices[0].finish_reason == "tool_calls"


def test_malformed_arguments_are_sent_verbatim(model, client):
    bad = '{"code": "print(1)'
    model.script(reply(None, call("ipython", bad)), reply(None, call("ipython", bad)))
    r = ask(client)
    assert r.choices[0].message.tool_calls[0].function.arguments == bad
    s = collect_stream(ask(client, stream=True))
    assert s["calls"][0]["arguments"] == bad
    assert model.errors == []


def test_stream_content_and_tool_calls(model, client):
    model.script(
        reply(
            "Let me compute that for you.",
            ipython("sum(range(10))", id="c-a"),
            ipython("print('hi')", timeout=3),
        )
    )
    s = collect_stream(ask(client, "x" * 80, stream=True, stream_options={"include_usage": True}))
    assert s["roles"] == ["assistant"]
    assert s["content"] == "Let me compute that for you."
    assert s["calls"] == [
        {"id": "c-a", "name": "ipython", "arguments": json.dumps({"code": "sum(range(10))"})},
        {
            "id": "call_1",
            "name": "ipython",
            "arguments": json.dumps({"code": "print('hi')", "timeout": 3}),
        },
    ]
    assert s["finish"] == "tool_calls"
    assert (s["usage"].prompt_tokens, s["usage"].completion_tokens) == ((15 + 80) // 4, 7)
    assert model.errors == []


def test_stream_without_include_usage_has_no_usage_chunk(model, client):
    model.script(reply("ok"))
    chunks = list(ask(client, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert collect_stream(chunks)["finish"] == "stop"


async def test_async_client_stream_and_plain(model):
    model.script(reply("streamed answer"), reply(None, ipython("1")))
    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="t", max_retries=0) as ac:
        stream = await ac.chat.completions.create(
            model="m", messages=user("t"), stream=True, stream_options={"include_usage": True}
        )
        s = collect_stream([c async for c in stream])
        assert s["content"] == "streamed answer"
        assert s["usage"].completion_tokens == 7
        r = await ac.chat.completions.create(model="m", messages=user("t"))
        assert r.choices[0].message.tool_calls[0].id == "call_1"
    assert model.errors == []


# ------------------------------------------------------------------------------ routing


def test_routing_by_first_user_message(model, client):
    model.script("default 1", "default 2")
    model.script("alpha 1", match="alpha")
    model.script("alpha beta 1", match="alpha beta")
    model.script("gamma 1", match="gamma")

    assert ask(client, "please do alpha beta now").choices[0].message.content == "alpha beta 1"
    assert ask(client, "alpha only").choices[0].message.content == "alpha 1"
    # The key only counts in the FIRST user message: not in system or later user messages.
    later = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "gamma"},
            {"role": "user", "content": "unrelated"},
            {"role": "assistant", "content": "gamma"},
            {"role": "user", "content": "gamma"},
        ],
    )
    assert later.choices[0].message.content == "default 1"
    # Content given as a list of parts is matched on its text.
    parts = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "a gamma"}]}]
    )
    assert parts.choices[0].message.content == "gamma 1"
    assert ask(client, "nothing").choices[0].message.content == "default 2"

    assert [r["messages"][1]["content"] for r in model.requests_for("alpha")] == ["alpha only"]
    assert len(model.requests_for("alpha beta")) == 1
    assert len(model.requests_for(None)) == 2
    assert len(model.requests) == 5
    assert all(model.pending(k) == 0 for k in (None, "alpha", "alpha beta", "gamma"))
    assert model.errors == []


def test_requests_are_recorded_in_order(model, client):
    model.script("a", "b")
    ask(client, "first", temperature=0.5)
    ask(client, "second", tools=[{"type": "function", "function": {"name": "ipython"}}])
    assert [r["messages"][1]["content"] for r in model.requests] == ["first", "second"]
    assert model.requests[0]["temperature"] == 0.5
    assert model.requests[1]["tools"][0]["function"]["name"] == "ipython"
    assert model.requests[0]["model"] == "scripted"


def test_callable_step_builds_response_from_request(model, client):
    model.script(lambda body: reply("echo: " + body["messages"][-1]["content"]))
    model.script(lambda body: lambda _b: fault(503), match="nested")
    assert ask(client, "ping").choices[0].message.content == "echo: ping"
    with pytest.raises(openai.InternalServerError) as ei:
        ask(client, "nested")
    assert ei.value.status_code == 503
    assert model.errors == []


def test_callable_step_that_raises_is_an_error(model, client):
    model.script(lambda body: 1 / 0)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert len(model.errors) == 1 and "ZeroDivisionError" in model.errors[0]


def test_script_rejects_non_steps(model):
    with pytest.raises(TypeError):
        model.script(42)
    with pytest.raises(TypeError):
        reply("x", "not a tool call")
    with pytest.raises(ValueError):
        model.script("x", match="")


async def test_many_concurrent_requests_each_get_their_own_queue(model):
    n = 60
    for i in range(n):
        # "task 1" is a substring of "task 10".."task 19": longest key must win.
        model.script(delay(0.05, reply(f"answer {i}")), match=f"<task {i}>")
    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="t", max_retries=0) as ac:

        async def one(i: int) -> str:
            r = await ac.chat.completions.create(model="m", messages=user(f"do <task {i}>"))
            return r.choices[0].message.content

        t0 = time.monotonic()
        answers = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.monotonic() - t0
    assert answers == [f"answer {i}" for i in range(n)]
    assert elapsed < 2  # served concurrently, not one 50 ms delay after another
    assert len(model.requests) == n
    assert model.errors == []


# ------------------------------------------------------------------------------ failures


def test_fault_500_and_429(model, client):
    model.script(fault(), fault(429, headers={"Retry-After": "0"}), fault(400, b'{"error": {}}'))
    with pytest.raises(openai.InternalServerError) as e500:
        ask(client)
    assert e500.value.status_code == 500
    assert "scripted failure" in str(e500.value)
    with pytest.raises(openai.RateLimitError) as e429:
        ask(client)
    assert e429.value.response.headers["retry-after"] == "0"
    with pytest.raises(openai.BadRequestError):
        ask(client, stream=True)
    assert model.errors == []


def test_not_json(model, client):
    model.script(not_json(), not_json(), not_json(content_type="text/plain"))
    # application/json that does not parse: the SDK lets json's decode error through unwrapped.
    with pytest.raises(json.JSONDecodeError):
        ask(client)
    with pytest.raises(json.JSONDecodeError):
        list(ask(client, stream=True))
    # Non-JSON content type: the SDK returns the raw text instead of a ChatCompletion.
    assert isinstance(ask(client), str)
    assert model.errors == []


def test_empty_choices(model, client):
    model.script(empty_choices(), empty_choices())
    r = ask(client)
    assert r.choices == []  # the SDK accepts it; r.choices[0] is the agent's IndexError
    with pytest.raises(IndexError):
        _ = r.choices[0]
    assert collect_stream(ask(client, stream=True))["finish"] is None


def test_drop_variants_surface_as_connection_errors(model, client):
    model.script(drop(), drop(partial=True), drop(), drop(partial=True), "recovered")
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    with pytest.raises(openai.APIConnectionError):
        list(ask(client, stream=True))
    stream = ask(client, stream=True)  # headers and the role chunk arrive, then the cut
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    assert ask(client).choices[0].message.content == "recovered"
    assert model.errors == []


def test_exhaustion_and_no_match_are_recorded(model, client):
    model.script("only one", match="keyed")
    assert ask(client, "keyed task").choices[0].message.content == "only one"
    with pytest.raises(openai.InternalServerError) as ei:
        ask(client, "keyed task")
    assert "exhausted" in str(ei.value)
    with pytest.raises(openai.InternalServerError):
        ask(client, "other task")
    assert len(model.errors) == 2
    assert "exhausted" in model.errors[0] and "'keyed'" in model.errors[0]
    assert "no scripted queue matches" in model.errors[1] and "other task" in model.errors[1]
    assert len(model.requests) == 3
    assert len(model.requests_for("keyed")) == 1


def test_unknown_path_and_unparsable_body(model):
    req = urllib.request.Request(model.base_url + "/embeddings", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e404:
        urllib.request.urlopen(req, timeout=5)
    assert e404.value.code == 404
    req = urllib.request.Request(model.base_url + "/chat/completions", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e400:
        urllib.request.urlopen(req, timeout=5)
    assert e400.value.code == 400
    assert len(model.errors) == 2
    assert "unexpected request" in model.errors[0] and "unparsable" in model.errors[1]
    assert model.requests == []


# ------------------------------------------------------------------------------ wait / delay


def test_wait_holds_the_request_until_the_event(model, client):
    go = threading.Event()
    model.script(wait(go, then=reply("released")))
    threading.Timer(0.2, go.set).start()
    t0 = time.monotonic()
    assert ask(client).choices[0].message.content == "released"
    assert time.monotonic() - t0 >= 0.15
    assert model.errors == []


async def test_cancelled_client_while_waiting(model):
    go = threading.Event()
    model.script(wait(go), "after cancel")
    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="t", max_retries=0) as ac:
        task = asyncio.create_task(ac.chat.completions.create(model="m", messages=user("t")))
        while not model.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go.set()  # the held handler now writes to a gone client: not a scripting error
        r = await ac.chat.completions.create(model="m", messages=user("t"))
        assert r.choices[0].message.content == "after cancel"
    assert model.errors == []


def test_close_releases_waiters_and_is_idempotent():
    model = ScriptedModel()
    model.script(wait(threading.Event()))
    client = openai.OpenAI(base_url=model.base_url, api_key="t", max_retries=0, timeout=5)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(_try(lambda: ask(client))))
    worker.start()
    while not model.requests:
        time.sleep(0.01)
    t0 = time.monotonic()
    model.close()
    model.close()
    worker.join(5)
    assert time.monotonic() - t0 < 2
    assert not worker.is_alive() and result
    assert model.errors == []
    client.close()


def _try(fn):
    try:
        return fn()
    except Exception as exc:
        return exc
