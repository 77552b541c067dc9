"""The model endpoint misbehaving in the ways real servers and gateways do.

One retry layer counted once and reported as it happens; a deadline per attempt that a
trickling server cannot stretch; replies validated (common variants accepted, garbage retried
then refused in one line); requests that strict local servers accept; error lines that quote
the endpoint once, cut short, and never leak the key. All against real HTTP (the scripted
server in ``tests/scripted_model.py``); no kernel is needed.
"""

from __future__ import annotations

import base64
import email.utils
import json
import socket
import time
import tracemalloc
import zlib
from typing import Any

import pytest
from faultkit import API_KEY, check_logs, read_jsonl, tool_results

import rlm
from conftest import read_meta, sessions
from helpers import run_cli
from rlm.agent import events as ev
from rlm.agent.model import ModelClient
from rlm.config import load_settings
from rlm.errors import ModelError
from scripted_model import ScriptedModel, call, fault, raw, reply, trickle


def _retries(events: list[ev.Event]) -> list[ev.ModelRetry]:
    return [e for e in events if isinstance(e, ev.ModelRetry)]


def _error_line(error: BaseException) -> str:
    """The error without the session path the agent appends."""
    return str(error).split(" (session: ")[0]


def _completion(message: Any = None, **fields: Any) -> dict[str, Any]:
    """A completion body; ``message``/``choices``/``usage`` may be anything, on purpose."""
    body: dict[str, Any] = {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
    body.update(fields)
    return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- one retry layer ----------------------------------------------------------------------


async def test_attempts_are_counted_once_and_reported_as_they_happen(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_SDK_MAX_RETRIES", "5")  # deprecated: must not multiply attempts
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "3")
    model.script(*[fault(503, body=f'{{"error": {{"message": "down {i}"}}}}') for i in range(20)])
    events: list[ev.Event] = []
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("outage", tools="", on_event=events.append)
    assert len(model.requests) == 3
    assert [(r.attempt, r.attempts, r.reason) for r in _retries(events)] == [
        (2, 3, "HTTP 503"),
        (3, 3, "HTTP 503"),
    ]
    message = _error_line(caught.value)
    assert message == "model request failed after 3 attempts: HTTP 503: down 2", message


async def test_backoff_is_random_and_capped(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "8")
    monkeypatch.setenv("RLM_RETRY_MAX_WAIT", "0.05")
    model.script(*[fault(502)] * 7, reply("back"))
    events: list[ev.Event] = []
    assert await rlm.run("jitter", tools="", on_event=events.append) == "back"
    waits = [r.wait for r in _retries(events)]
    assert len(waits) == 7 and all(0 <= w <= 0.05 for w in waits), waits
    assert len(set(waits)) > 1, f"the same wait every time is lockstep, not jitter: {waits}"


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "3600"},
        {"retry-after-ms": "3600000"},
        {"Retry-After": email.utils.formatdate(time.time() + 3600, usegmt=True)},
    ],
    ids=["seconds", "ms", "http-date"],
)
async def test_retry_after_is_capped_at_the_max_wait(model, rlm_env, monkeypatch, headers):
    monkeypatch.setenv("RLM_RETRY_MAX_WAIT", "0.2")
    model.script(fault(429, headers=headers), reply("soon enough"))
    events: list[ev.Event] = []
    assert await rlm.run("rate limited", tools="", on_event=events.append) == "soon enough"
    assert [r.wait for r in _retries(events)] == [0.2]


async def test_a_repeated_server_error_is_retried_only_once_more(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "6")
    same = '{"error": {"message": "invalid tool schema at tools[0]"}}'
    model.script(*[fault(500, body=same)] * 6)
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("deterministic", tools="")
    assert len(model.requests) == 3
    assert _error_line(caught.value) == (
        "model request failed after 3 attempts (the same error each time): "
        "HTTP 500: invalid tool schema at tools[0]"
    )


async def test_gateway_errors_are_retried_even_when_their_page_repeats(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "6")
    model.script(*[fault(503, body="<html>upstream down</html>")] * 5, reply("up again"))
    assert await rlm.run("restarting server", tools="") == "up again"
    assert len(model.requests) == 6


async def test_a_refused_first_connection_fails_fast_with_a_hint(rlm_env, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    monkeypatch.setenv("RLM_BASE_URL", url)
    monkeypatch.setenv("RLM_RETRY_MAX_WAIT", "5")
    events: list[ev.Event] = []
    started = time.monotonic()
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("nobody home", tools="", on_event=events.append)
    assert time.monotonic() - started < 5
    assert _retries(events) == []
    message = _error_line(caught.value)
    assert message == (
        f"model request failed: cannot reach the model endpoint (connection refused at {url}); "
        "is RLM_BASE_URL right?"
    )


async def test_a_refused_connection_after_the_endpoint_answered_is_retried(rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "3")
    server = ScriptedModel()
    monkeypatch.setenv("RLM_BASE_URL", server.base_url)
    client = ModelClient(load_settings())
    try:
        with server:
            server.script(reply("first"))
            messages = [{"role": "user", "content": "hi"}]
            assert (await client.complete(messages, [], "m")).message["content"] == "first"
        seen: list[tuple[int, int, str]] = []
        with pytest.raises(ModelError) as caught:
            await client.complete(
                messages, [], "m", on_retry=lambda a, n, w, r: seen.append((a, n, r))
            )
    finally:
        await client.close()
    assert seen == [(2, 3, "connection refused"), (3, 3, "connection refused")]
    assert str(caught.value).startswith("model request failed after 3 attempts: cannot reach")


def test_the_cli_prints_each_retry_and_one_line_when_it_gives_up(model, rlm_env):
    model.script(fault(503), fault(503))
    result = run_cli("doomed", env={"RLM_TOOLS": "", "RLM_RETRY_ATTEMPTS": "2"})
    assert result.returncode == 1 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert "model endpoint: HTTP 503, retrying in 0.0 s (2/2)" in lines, result.stderr
    assert lines[-1].startswith("rlm: model request failed after 2 attempts: HTTP 503")
    assert "Traceback" not in result.stderr


def test_the_cli_reports_a_wrong_base_url_in_one_line(rlm_env):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    result = run_cli("hello", "-q", env={"RLM_TOOLS": "", "RLM_BASE_URL": url})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "is RLM_BASE_URL right?" in result.stderr


# -- a deadline per attempt -----------------------------------------------------------------


@pytest.mark.parametrize("stall", ["trickle", "silent"])
async def test_a_stalled_attempt_ends_at_the_model_timeout_and_is_retried(
    model, rlm_env, monkeypatch, stall
):
    monkeypatch.setenv("RLM_MODEL_TIMEOUT", "1.5")
    # Headers at once, then a byte every 0.3 s: no read ever times out, the reply never ends.
    first = trickle(0.3) if stall == "trickle" else trickle(30)
    model.script(first, reply("on time"))
    events: list[ev.Event] = []
    started = time.monotonic()
    assert await rlm.run("slow", tools="", on_event=events.append) == "on time"
    assert time.monotonic() - started < 6
    assert [r.reason for r in _retries(events)] == ["no reply within 1.5 s"]


async def test_an_endpoint_that_always_stalls_fails_in_one_line(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MODEL_TIMEOUT", "0.5")
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "2")
    model.script(trickle(0.2), trickle(0.2))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("stuck", tools="")
    assert _error_line(caught.value) == (
        "model request failed after 2 attempts: no complete reply within 0.5 s (RLM_MODEL_TIMEOUT)"
    )


# -- reply fields and usage -----------------------------------------------------------------


async def test_reply_carries_finish_reason_model_and_id(model, rlm_env):
    client = ModelClient(load_settings())
    try:
        model.script(reply("cut", finish_reason="length"))
        got = await client.complete([{"role": "user", "content": "hi"}], [], "asked-model")
    finally:
        await client.close()
    assert (got.finish_reason, got.model) == ("length", "asked-model")
    assert got.id is not None and got.id.startswith("chatcmpl-scripted-")


USAGES = {
    "missing": (None, None),
    "null": ({"usage": None}, None),
    "negative": ({"usage": {"prompt_tokens": -5, "completion_tokens": 3}}, (None, 3)),
    "strings": ({"usage": {"prompt_tokens": "12", "completion_tokens": 3}}, (None, 3)),
    "absurd": ({"usage": {"prompt_tokens": 10**15, "completion_tokens": 1.0}}, (None, 1)),
}


@pytest.mark.parametrize("kind", USAGES)
async def test_unknown_token_counts_are_logged_as_unknown_not_zero(model, rlm_env, kind):
    fields, expected = USAGES[kind]
    body = _completion({"role": "assistant", "content": "counted"})
    if fields is None:
        del body["usage"]
    else:
        body.update(fields)
    model.script(raw(body))
    assert await rlm.run("count me", tools="") == "counted"
    (folder,) = sessions(rlm_env)
    last = [r for r in read_jsonl(folder / "messages.jsonl") if "role" in r][-1]
    prompt, completion = expected or (None, None)
    assert last["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion}
    usage = read_meta(folder)["usage"]
    assert usage == {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0}
    check_logs(rlm_env)


# -- reply validation -----------------------------------------------------------------------


async def test_common_reply_variants_are_accepted(model, rlm_env):
    args_as_object = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "nope", "arguments": {"a": 1}}},
            {"function": {"name": "nada", "arguments": None}},  # no id, no type (llama.cpp)
        ],
    }
    parts = {"role": "assistant", "content": [{"type": "text", "text": "hello "}, "world"]}
    model.script(raw(_completion(args_as_object)), raw(_completion(parts)))
    assert await rlm.run("variants", tools="summarize") == "hello world"
    assistant = model.requests[1]["messages"][2]
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == ['{"a": 1}', "{}"]
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert ids[0] == "c1" and ids[1] and ids[1] != "c1"
    assert [m["tool_call_id"] for m in model.requests[1]["messages"][3:]] == ids
    check_logs(rlm_env)


MALFORMED: dict[str, Any] = {
    "message-null": raw(_completion(None)),
    "choices-object": raw(_completion(choices={"0": {"message": {"content": "x"}}})),
    "tool-calls-object": raw(
        _completion({"role": "assistant", "tool_calls": {"id": "c", "function": {}}})
    ),
    "tool-call-without-function": raw(
        _completion({"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]})
    ),
    "content-number": raw(_completion({"role": "assistant", "content": 42})),
    "content-parts-numbers": raw(_completion({"role": "assistant", "content": [4, 2]})),
    "invalid-utf8": raw(b'{"choices": [{"message": {"content": "\xff\xfe"}}]}'),
    "deeply-nested": raw("[" * 100_000 + "]" * 100_000),
    "json-array": raw([1, 2, 3]),
    "error-as-200": raw({"error": {"message": "model overloaded"}}),
}


@pytest.mark.parametrize("kind", MALFORMED)
async def test_a_malformed_reply_is_retried_then_refused_in_one_line(
    model, rlm_env, monkeypatch, kind
):
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "2")
    model.script(MALFORMED[kind], MALFORMED[kind])
    events: list[ev.Event] = []
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("garbage", tools="", on_event=events.append)
    assert caught.value.reason == "model_error"
    assert [r.reason for r in _retries(events)] == ["malformed reply"]
    message = _error_line(caught.value)
    assert message.startswith("model request failed after 2 attempts: the ")
    assert "\n" not in message and "Traceback" not in message and len(message) < 400, message
    check_logs(rlm_env)


async def test_a_malformed_reply_then_a_good_one_leaves_no_trace(model, rlm_env):
    model.script(MALFORMED["message-null"], reply("fine"))
    assert await rlm.run("flaky gateway", tools="") == "fine"
    assert len(model.requests) == 2


async def test_a_tool_call_of_another_type_is_answered_not_dropped(model, rlm_env):
    custom = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c9", "type": "custom", "custom": {"name": "x", "input": "y"}},
        ],
    }
    model.script(raw(_completion(custom)), reply("noted"))
    assert await rlm.run("custom tools", tools="summarize") == "noted"
    (result,) = tool_results(model.requests)
    assert result.startswith("Error: unknown tool 'custom'"), result
    check_logs(rlm_env)


def _big_reply(size: int) -> bytes:
    return json.dumps(_completion({"role": "assistant", "content": "a" * size})).encode()


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip-bomb"])
async def test_a_reply_over_the_size_cap_is_refused(model, rlm_env, monkeypatch, compressed):
    monkeypatch.setenv("RLM_MAX_REPLY_BYTES", str(1 << 20))
    model.script(raw(_big_reply(8 << 20), gzip=compressed))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("huge", tools="")
    assert len(model.requests) == 1  # not retried: it would only come back as large
    assert _error_line(caught.value) == (
        "model request failed: the reply is larger than 1048576 bytes (RLM_MAX_REPLY_BYTES)"
    )


# -- requests real servers accept ------------------------------------------------------------


async def test_requests_say_tool_choice_and_max_tokens_and_never_null_content(
    model, rlm_env, monkeypatch
):
    monkeypatch.setenv("RLM_MAX_COMPLETION_TOKENS", "321")
    model.script(reply(None, call("summarize", {"num_turns": 1, "summary": "s"})), reply("ok"))
    assert await rlm.run("shape", tools="summarize") == "ok"
    first, second = model.requests
    assert first["tool_choice"] == "auto" and first["max_tokens"] == 321
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["content"] == "" and assistant["tool_calls"]
    (folder,) = sessions(rlm_env)
    logged = next(r for r in read_jsonl(folder / "messages.jsonl") if r.get("tool_calls"))
    assert logged["content"] == ""  # the log holds what is sent


async def test_null_content_from_an_older_log_is_sent_as_empty(model, rlm_env):
    client = ModelClient(load_settings())
    history = [
        {"role": "user", "content": "resumed"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
    ]
    model.script(reply("ok"))
    try:
        await client.complete(history, [], "m")
    finally:
        await client.close()
    assert model.requests[0]["messages"][1]["content"] == ""
    assert history[1]["content"] is None  # the caller's context is not changed


async def test_without_tools_or_a_limit_neither_field_is_sent(model, rlm_env):
    model.script(reply("plain"))
    assert await rlm.run("plain", tools="") == "plain"
    (body,) = model.requests
    assert "tools" not in body and "tool_choice" not in body and "max_tokens" not in body


# -- errors people read -----------------------------------------------------------------------


async def test_an_error_body_is_quoted_once_and_cut_short(model, rlm_env):
    model.script(fault(400, body=json.dumps({"error": {"message": "bad " + "x" * 5000}})))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("long error", tools="")
    message = _error_line(caught.value)
    assert message.startswith("model request failed: HTTP 400: bad xxx")
    assert "Error code" not in message and len(message) < 600, len(message)


ECHOES = {
    "as-sent": API_KEY,
    "upper-case": API_KEY.upper(),
    "base64": base64.b64encode(f"user:{API_KEY}".encode()).decode(),
    "cut-short": API_KEY[:11] + "...",
    "tail": "..." + API_KEY[-9:],
}


@pytest.mark.parametrize("kind", ECHOES)
async def test_an_echoed_key_is_redacted_in_every_form(model, rlm_env, kind):
    echoed = ECHOES[kind]
    model.script(fault(400, body=json.dumps({"error": {"message": f"bad auth {echoed} here"}})))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("echo", tools="")
    message = _error_line(caught.value)
    assert "<redacted>" in message and message.endswith(" here"), message
    assert echoed not in message
    for text in (API_KEY.lower(), base64.b64encode(API_KEY.encode()).decode().lower()):
        assert not any(text[i : i + 8] in message.lower() for i in range(len(text) - 7)), message
    assert read_meta(sessions(rlm_env)[0])["error"] == message


async def test_a_short_key_is_not_redacted(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_API_KEY", "x")
    model.script(fault(400, body='{"error": {"message": "max_tokens exceeds context"}}'))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("short key", tools="")
    assert _error_line(caught.value) == (
        "model request failed: HTTP 400: max_tokens exceeds context"
    )


def test_the_live_view_prints_a_retry_above_the_tree():
    from io import StringIO

    from rich.console import Console

    from rlm.cli.live import LiveView

    out = StringIO()
    view = LiveView(Console(file=out, width=120, color_system=None))
    view(ev.AgentStarted(agent_id="s1", depth=0, parent_id=None, session_path="/tmp/s1", task="t"))
    view(
        ev.AgentStarted(
            agent_id="s1/sub-1", depth=1, parent_id="s1", session_path="/tmp/s1/sub-1", task="c"
        )
    )
    view(
        ev.ModelRetry(
            agent_id="s1/sub-1", depth=1, attempt=2, attempts=6, wait=4.2, reason="HTTP 503"
        )
    )
    view(
        ev.ModelResponse(
            agent_id="s1",
            depth=0,
            turn=1,
            prompt_tokens=None,
            completion_tokens=None,
            latency=0.1,
            tool_calls=0,
        )
    )
    assert out.getvalue() == "[sub-1] model endpoint: HTTP 503, retrying in 4 s (2/6)\n"
    assert view.rows["s1"].tokens == 0


async def test_a_failing_retry_callback_does_not_end_the_call(model, rlm_env):
    def broken(attempt: int, attempts: int, wait: float, reason: str) -> None:
        raise RuntimeError("observer bug")

    model.script(fault(503), reply("still fine"))
    client = ModelClient(load_settings())
    try:
        got = await client.complete([{"role": "user", "content": "hi"}], [], "m", on_retry=broken)
    finally:
        await client.close()
    assert got.message["content"] == "still fine"


async def test_a_gzip_bombed_error_body_is_not_inflated(model, rlm_env):
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    block = b"x" * (1 << 20)
    bomb = packer.compress(b'{"error": {"message": "') + b"".join(
        packer.compress(block) for _ in range(64)
    )
    bomb += packer.compress(b'"}}') + packer.flush()
    model.script(fault(400, body=bomb, headers={"Content-Encoding": "gzip"}))
    client = ModelClient(load_settings())
    tracemalloc.start()
    try:
        with pytest.raises(ModelError) as caught:
            await client.complete([{"role": "user", "content": "hi"}], [], "m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await client.close()
    assert peak < 40 << 20, f"{peak >> 20} MiB held for a 64 MiB error body"
    message = str(caught.value)
    assert message.startswith('model request failed: HTTP 400: {"error": {"message": "xxx')
    assert len(message) < 600
