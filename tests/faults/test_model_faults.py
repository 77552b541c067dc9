"""Model-side faults: the endpoint errs, hangs up, or answers with something unusable.

Every fault is either retried (the run ends with the answer, the log holds each message once)
or turned into a clear one-line error or a clear message to the model; never a traceback.
No kernel is needed here (``tools=""`` or ``summarize`` only), so these cases are fast.
"""

from __future__ import annotations

import time

import pytest
from faultkit import (
    API_KEY,
    assert_nothing_lost,
    check_logs,
    files_containing,
    read_jsonl,
    tool_results,
    user_messages,
)

import rlm
from conftest import read_meta, sessions
from helpers import run_cli
from scripted_model import call, drop, empty_choices, fault, not_json, reply

TRANSIENT = {
    "500": fault(500),
    "502-html": fault(502, body="<html>bad gateway</html>"),
    "503": fault(503),
    "429": fault(429, headers={"Retry-After": "0"}),
    "dropped": drop(),
    "dropped-mid-response": drop(partial=True),
    "not-json": not_json(),
    "not-json-text-plain": not_json("upstream timed out", content_type="text/plain"),
    "empty-choices": empty_choices(),
}


@pytest.mark.parametrize("kind", TRANSIENT)
async def test_transient_fault_is_retried_and_the_log_has_no_trace_of_it(model, rlm_env, kind):
    model.script(TRANSIENT[kind], TRANSIENT[kind], reply("fine"))
    assert await rlm.run("flaky endpoint", tools="") == "fine"
    assert len(model.requests) == 3
    assert model.requests[0]["messages"] == model.requests[2]["messages"]  # same request again
    (folder,) = sessions(rlm_env)
    assert_nothing_lost(folder, model.requests, "fine")
    assert read_meta(folder)["turns"] == 1
    check_logs(rlm_env)


async def test_retry_after_is_honoured(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_RETRY_MAX_WAIT", "5")  # Retry-After is honoured up to this
    seen: list[float] = []

    def stamp(step):
        def serve(body: dict):
            seen.append(time.monotonic())
            return step

        return serve

    model.script(stamp(fault(429, headers={"Retry-After": "1"})), stamp(reply("waited")))
    assert await rlm.run("rate limited", tools="") == "waited"
    assert seen[1] - seen[0] >= 0.9, f"retried after {seen[1] - seen[0]:.2f} s"
    check_logs(rlm_env)


PERSISTENT = {
    "500": (fault(500), "HTTP 500"),
    "429": (fault(429, headers={"Retry-After": "0"}), "HTTP 429"),
    "dropped": (drop(), "cannot reach the model endpoint"),
    "dropped-mid-response": (drop(partial=True), "cannot reach the model endpoint"),
    "not-json": (not_json(), "not JSON"),
    "empty-choices": (empty_choices(), "no choices"),
}


@pytest.mark.parametrize(
    "kind",
    PERSISTENT,
)
async def test_persistent_fault_ends_the_run_with_a_clear_error(model, rlm_env, monkeypatch, kind):
    step, expected = PERSISTENT[kind]
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "3")
    model.script(step, step, step)
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("dead endpoint", tools="")
    error = caught.value
    assert error.reason == "model_error"
    message = str(error)
    assert "after 3 attempts" in message and expected in message, message
    assert "\n" not in message and "Traceback" not in message
    (folder,) = sessions(rlm_env)
    meta = read_meta(folder)
    assert meta["status"] == "error" and meta["stop_reason"] == "model_error"
    assert expected in meta["error"]
    assert [r["role"] for r in _log(folder)] == ["system", "user"]  # nothing half-written
    check_logs(rlm_env)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retried(model, rlm_env, status):
    model.script(fault(status, body='{"error": {"message": "scripted refusal"}}'))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("refused", tools="")
    assert len(model.requests) == 1
    message = str(caught.value).split(" (session: ")[0]
    assert message.startswith(f"model request failed: HTTP {status}: "), message
    assert "Error code" not in message and message.count(str(status)) == 1, message
    # The body of an auth failure is never quoted: that is where endpoints echo credentials.
    assert ("scripted refusal" in message) == (status not in (401, 403)), message
    assert read_meta(sessions(rlm_env)[0])["stop_reason"] == "model_error"
    check_logs(rlm_env)


# -- bad tool calls become messages to the model ---------------------------------------------


async def test_bad_tool_calls_are_answered_with_clear_messages(model, rlm_env):
    calls = [
        call("ipython", {"code": "1"}),  # a real tool, but not enabled here
        call("no_such_tool", {}),
        call("summarize", "{not json"),
        call("summarize", '["a", "list"]'),
        call("summarize", {"summary": "no num_turns"}),
        call("summarize", {"num_turns": "many", "summary": 3}),
        call("summarize", ""),
    ]
    model.script(reply(None, *calls), reply("handled"))
    assert await rlm.run("misbehaving model", tools="summarize") == "handled"
    results = tool_results(model.requests)
    assistant = next(m for m in model.requests[-1]["messages"] if m["role"] == "assistant")
    tool_ids = [m["tool_call_id"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool_ids == [c["id"] for c in assistant["tool_calls"]]  # every call answered, in order
    assert all(r.startswith("Error: ") for r in results), results
    assert "unknown tool 'ipython'; available: summarize" in results[0]
    assert "unknown tool 'no_such_tool'" in results[1]
    assert "not valid JSON" in results[2]
    assert "invalid arguments for summarize" in results[3]
    assert "num_turns" in results[4] and "Field required" in results[4]
    assert "num_turns" in results[5] and "summary" in results[5]
    assert "invalid arguments for summarize" in results[6]  # "" is read as {}
    assert all("Traceback" not in r for r in results)
    assert_nothing_lost(sessions(rlm_env)[0], model.requests, "handled")
    check_logs(rlm_env)


@pytest.mark.parametrize("content", [None, "", "  \n "], ids=["null", "empty", "blank"])
async def test_reply_with_neither_content_nor_tool_calls_gets_a_nudge(model, rlm_env, content):
    model.script(reply(content), reply("an answer at last"))
    assert await rlm.run("mute model", tools="") == "an answer at last"
    nudge = user_messages(model.requests)[-1]
    assert "neither text nor a tool call" in nudge
    assert_nothing_lost(sessions(rlm_env)[0], model.requests, "an answer at last")
    check_logs(rlm_env)


async def test_a_model_that_never_answers_stops_at_max_turns(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "3")
    model.script(reply(None), reply(""), reply(None))
    with pytest.raises(rlm.AgentError) as caught:
        await rlm.run("silent model", tools="")
    assert caught.value.reason == "max_turns"
    assert read_meta(sessions(rlm_env)[0])["turns"] == 3
    check_logs(rlm_env)


def _log(folder):
    return [r for r in read_jsonl(folder / "messages.jsonl") if "role" in r]


# -- the same through the CLI: what the user sees ------------------------------------------


def test_cli_survives_a_flaky_endpoint(model, rlm_env):
    model.script(drop(partial=True), not_json(), fault(503), empty_choices(), reply("steady"))
    result = run_cli("flaky", "-q", env={"RLM_TOOLS": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "steady\n" and result.stderr == ""
    check_logs(rlm_env)


def test_cli_reports_a_dead_endpoint_in_one_line(model, rlm_env):
    model.script(*[not_json()] * 2)
    result = run_cli("dead", "-q", env={"RLM_TOOLS": "", "RLM_RETRY_ATTEMPTS": "2"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlm: model request failed"), result.stderr
    assert API_KEY not in result.stderr
    assert files_containing(rlm_env, API_KEY) == []
    check_logs(rlm_env)
