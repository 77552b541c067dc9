"""The control messages' schema and the one error codec: what a kernel sends is validated
by the orchestrator, and an error raised there is raised again, same class and fields, in
the cell that asked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

import rlm
from conftest import sessions
from rlm.errors import (
    AgentError,
    ConfigError,
    DepthLimitError,
    KernelDiedError,
    ModelError,
    RLMError,
)
from rlm.schema import StopReason
from rlm.schema.control import RunRequest, decode_error, encode_error
from scripted_model import ipython, reply


def round_trip(exc: BaseException) -> RLMError:
    return decode_error(json.loads(json.dumps(encode_error(exc))))


def test_agent_error_keeps_its_bare_message_reason_and_folder():
    sent = AgentError("stopped after 3 turns", reason="max_turns", session_path="/s/sub-1")
    assert str(sent) == "stopped after 3 turns (session: /s/sub-1)"  # for humans
    assert encode_error(sent)["message"] == "stopped after 3 turns"  # never the suffix
    got = round_trip(sent)
    assert type(got) is AgentError
    assert (got.message, got.reason, got.session_path) == (
        "stopped after 3 turns",
        StopReason.MAX_TURNS,
        "/s/sub-1",
    )
    assert str(got) == str(sent)


@pytest.mark.parametrize("cls", [ConfigError, DepthLimitError, ModelError, KernelDiedError])
def test_rlm_errors_keep_their_class_and_message(cls: type[RLMError]):
    got = round_trip(cls("no good"))
    assert type(got) is cls and str(got) == "no good"


def test_other_failures_decode_as_rlm_error():
    bug = round_trip(ValueError("bad thing"))
    assert type(bug) is RLMError and str(bug) == "ValueError: bad thing"
    assert str(round_trip(asyncio.CancelledError())) == "cancelled"
    assert type(decode_error({"status": "error", "error_type": "os.system"})) is RLMError
    assert "malformed reply" in str(decode_error({"message": ["not", "text"]}))
    assert "malformed reply" in str(decode_error("nonsense"))


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({}, "task"),
        ({"task": None}, "task"),
        ({"task": "t", "inputs": "x"}, "inputs"),
        ({"task": "t", "inputs": [{"name": "not a name"}]}, "inputs.0.name"),
        ({"task": "t", "max_turns": "lots"}, "max_turns"),
    ],
)
def test_a_malformed_run_request_is_one_config_error(content: dict, field: str):
    with pytest.raises(ConfigError) as info:
        RunRequest.parse(content, "run_request")
    message = str(info.value)
    assert message.startswith("malformed run_request: ") and field in message
    assert "\n" not in message


def test_unknown_request_keys_are_ignored():
    request = RunRequest.parse({"task": "t", "max_depth": 9, "buffer_sha256": []}, "x")
    assert "max_depth" not in request.content()
    both = [RunRequest.parse({"task": "t", "tools": t}, "x").tools for t in ("a,b", ["a", "b"])]
    assert both == ["a,b", ["a", "b"]]


MALFORMED = r"""
import json
from rlm.control.channel import ControlClient
st = rlm.inkernel._state
client = ControlClient(st['address'], st['agent_id'], st['secret'])
out = {}
for label, kind, content in [
    ('no_task', 'run_request', {'inputs': []}),
    ('bad_inputs', 'run_request', {'task': 'child: x', 'inputs': 'abc'}),
    ('bad_name', 'run_request', {'task': 'child: x', 'inputs': [{'name': '1x'}]}),
    ('unknown', 'launch_request', {}),
]:
    out[label], _ = await client.request(kind, content)
try:
    await rlm.run('child: fails', max_turns=1)
except rlm.AgentError as e:
    out['child'] = [type(e).__name__, e.message, e.reason, e.session_path]
out['after'] = await rlm.run('child: fine')
print(json.dumps(out))
"""


async def test_malformed_requests_get_error_replies_and_the_channel_goes_on(
    model, rlm_env, monkeypatch
):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(reply(None, ipython(MALFORMED)), reply("ok"), match="root")
    model.script(reply(None, ipython("1")), match="child: fails")
    model.script(reply("fine answer"), match="child: fine")
    assert await rlm.run("root task") == "ok"
    result = [m for m in model.requests_for("root")[-1]["messages"] if m["role"] == "tool"]
    out = json.loads(result[0]["content"].splitlines()[0])
    for label, field in [("no_task", "task"), ("bad_inputs", "inputs"), ("bad_name", "name")]:
        error = out[label]
        assert error["status"] == "error" and error["error_type"] == "ConfigError", error
        assert error["message"].startswith("malformed run_request:") and field in error["message"]
    assert out["unknown"]["error_type"] == "RLMError"
    assert "unknown request 'launch_request'" in out["unknown"]["message"]
    kind, message, reason, path = out["child"]
    assert kind == "AgentError" and reason == "max_turns" and "(session:" not in message
    assert message.startswith("stopped after 1 turn without") and path.endswith(
        tuple(p.name for p in sessions(rlm_env)[0].glob("sub-*"))
    )
    assert out["after"] == "fine answer"
    assert len(list(sessions(rlm_env)[0].glob("sub-*"))) == 2  # none for the malformed


def test_the_kernel_side_does_not_load_pydantic():
    """Every kernel imports rlm.inkernel and the channel; the schema (pydantic) is only
    loaded there on the first error reply, so a cold kernel start does not pay for it."""
    code = "import sys, rlm, rlm.inkernel, rlm.control.channel; print('pydantic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
