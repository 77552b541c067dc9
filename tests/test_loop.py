"""The agent loop against a fake host and a fake kernel: fast, no processes, no sockets.

The host and kernel here implement the seams of ``rlm.agent.host``; everything else (the
loop, the live context, the tools, the session log) is rlm's own code. The end-to-end tests
(tests/test_agent.py and others) drive the same loop through real kernels and HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from rlm.agent.events import Event
from rlm.agent.loop import MAX_CONTINUATIONS, Agent
from rlm.agent.model import ModelReply, Usage
from rlm.config import Settings
from rlm.errors import AgentError
from rlm.kernels.kernel import ExecResult
from rlm.runtime import agents

pytestmark = pytest.mark.timeout(20)


class FakeKernel:
    """Runs nothing: records each cell and answers from a script (default: echo)."""

    def __init__(self, results: dict[str, ExecResult] | None = None) -> None:
        self.cells: list[str] = []
        self.results = results or {}
        self.restarts = 0
        self.settled = 0
        self.closed = False
        self.bootstrap_output = ""

    async def execute(self, code: str, timeout: float) -> ExecResult:
        self.cells.append(code)
        return self.results.get(code, ExecResult(f"ran: {code}"))

    async def restart(self, timeout: float = 60.0) -> None:
        self.restarts += 1

    async def settle(self) -> None:
        self.settled += 1

    async def shutdown(self) -> None:
        self.closed = True

    @property
    def running_cell(self) -> str | None:
        return None


class FakeHost:
    """Answers model requests from a list of replies and records what it was sent."""

    def __init__(self, cwd: Path, replies: list[ModelReply], kernel: FakeKernel) -> None:
        self._cwd = cwd
        self.replies = list(replies)
        self.requests: list[list[dict[str, Any]]] = []
        self.events: list[Event] = []
        self.kernel = kernel
        self.forgotten: list[str] = []
        self.block: asyncio.Event | None = None

    @property
    def cwd(self) -> Path:
        return self._cwd

    @property
    def has_skills(self) -> bool:
        return False

    def emit(self, event: Event) -> None:
        self.events.append(event)

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        model: str,
        *,
        on_retry: Any = None,
        on_delta: Any = None,
    ) -> ModelReply:
        self.requests.append(json.loads(json.dumps(messages)))
        if self.block is not None:
            await self.block.wait()
        if not self.replies:
            raise AssertionError("the loop asked for more replies than scripted")
        return self.replies.pop(0)

    async def start_kernel(self, agent: Any, *, needed: Any = None) -> FakeKernel:
        return self.kernel

    def skills_report(self, kernel: Any) -> tuple[str, dict[str, str]]:
        return "", {}

    def charge(self, model: str, usage: Any) -> float:
        return 0.0

    async def agent_ending(self, agent: Any) -> None:
        pass

    def forget(self, agent: Any) -> None:
        self.forgotten.append(agent.id)


def text(content: str | None, *, finish: str = "stop", completion: int = 1) -> ModelReply:
    return ModelReply({"role": "assistant", "content": content}, Usage(10, completion), 0.0, finish)


def tool_call(
    code: str | None = None,
    *,
    raw: str | None = None,
    name: str = "ipython",
    finish: str = "tool_calls",
    completion: int = 1,
) -> ModelReply:
    arguments = raw if raw is not None else json.dumps({"code": code})
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return ModelReply(message, Usage(10, completion), 0.0, finish)


def settings(**values: Any) -> Settings:
    # model_validate reads no environment: the test decides every value
    return Settings.model_validate({"model": "fake", **values})


def build(
    tmp_path: Path,
    replies: list[ModelReply],
    kernel: FakeKernel | None = None,
    inputs: Any = None,
    **values: Any,
) -> tuple[Agent, FakeHost]:
    host = FakeHost(tmp_path, replies, kernel or FakeKernel())
    sessions = tmp_path / "sessions"
    sessions.mkdir(exist_ok=True)
    agent = agents.new_root(host, settings(**values), sessions, "the task", inputs=inputs)
    return agent, host


def meta(agent: Agent) -> dict[str, Any]:
    return json.loads((agent.log.path / "meta.json").read_text())


def log_lines(agent: Agent) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (agent.log.path / "messages.jsonl").read_text().splitlines()]


def tool_results(request: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in request if m["role"] == "tool"]


async def test_text_reply_is_the_answer(tmp_path):
    agent, host = build(tmp_path, [text("42")])
    assert await agent.run() == "42"
    assert meta(agent)["status"] == "done" and meta(agent)["stop_reason"] == "answer"
    assert host.forgotten == [agent.id]


async def test_empty_reply_is_nudged_then_answered(tmp_path):
    agent, host = build(tmp_path, [text(""), text("done")])
    assert await agent.run() == "done"
    assert "neither text nor a tool call" in host.requests[1][-1]["content"]
    assert host.requests[1][-1]["role"] == "user"


async def test_tool_result_reaches_the_next_request(tmp_path):
    kernel = FakeKernel()
    agent, host = build(tmp_path, [tool_call("x = 1"), text("ok")], kernel)
    assert await agent.run() == "ok"
    assert kernel.cells == ["x = 1"]
    assert tool_results(host.requests[1]) == ["ran: x = 1"]


async def test_max_turns_stops_the_agent(tmp_path):
    agent, _ = build(tmp_path, [tool_call("1")] * 3, max_turns=3)
    with pytest.raises(AgentError) as info:
        await agent.run()
    assert info.value.reason == "max_turns"
    assert meta(agent)["stop_reason"] == "max_turns" and meta(agent)["status"] == "error"


@pytest.mark.parametrize(("spent", "stops"), [(9, False), (10, True), (11, True)])
async def test_token_budget_stops_at_the_boundary(tmp_path, spent, stops):
    agent, _ = build(
        tmp_path, [tool_call("1", completion=spent), text("fine")], max_tokens=10
    )
    if stops:
        with pytest.raises(AgentError) as info:
            await agent.run()
        assert info.value.reason == "token_budget"
        assert info.value.message == "completion-token budget of 10 spent (RLM_MAX_TOKENS)"
    else:
        assert await agent.run() == "fine"


async def test_invalid_json_arguments_are_reported_and_never_sent_back(tmp_path):
    broken = '{"code": "print(1'
    kernel = FakeKernel()
    agent, host = build(tmp_path, [tool_call(raw=broken), text("ok")], kernel)
    assert await agent.run() == "ok"
    assert kernel.cells == []
    (result,) = tool_results(host.requests[1])
    assert result.startswith("Error: the arguments are not valid JSON")
    sent = next(m for m in host.requests[1] if m.get("tool_calls"))
    assert sent["tool_calls"][0]["function"]["arguments"] == "{}"  # valid JSON in the context
    logged = next(line for line in log_lines(agent) if line.get("tool_calls"))
    assert logged["tool_calls"][0]["function"]["arguments"] == broken  # raw text in the log


async def test_raw_newlines_inside_argument_strings_are_accepted(tmp_path):
    kernel = FakeKernel()
    raw = '{"code": "x = 1\nprint(x)"}'  # a literal newline inside the JSON string
    agent, _ = build(tmp_path, [tool_call(raw=raw), text("ok")], kernel)
    assert await agent.run() == "ok"
    assert kernel.cells == ["x = 1\nprint(x)"]


async def test_bad_arguments_name_the_problem(tmp_path):
    agent, host = build(tmp_path, [tool_call(raw='{"cod": 1}'), text("ok")])
    await agent.run()
    (result,) = tool_results(host.requests[1])
    assert "invalid arguments for ipython" in result and "code" in result


async def test_unknown_tool_is_reported(tmp_path):
    agent, host = build(tmp_path, [tool_call("1", name="browse"), text("ok")])
    await agent.run()
    (result,) = tool_results(host.requests[1])
    assert "unknown tool 'browse'" in result and "ipython" in result


async def test_reply_cut_at_the_token_limit_is_continued_not_final(tmp_path):
    agent, host = build(
        tmp_path, [text("The answer is ", finish="length"), text("42.", finish="stop")]
    )
    assert await agent.run() == "The answer is 42."
    assert host.requests[1][-1]["content"].startswith("Your reply was cut off")
    lines = log_lines(agent)
    assert [line.get("finish_reason") for line in lines if line.get("role") == "assistant"] == [
        "length",
        "stop",
    ]


async def test_replies_cut_every_time_end_with_their_own_reason(tmp_path):
    replies = [text("more ", finish="length")] * (MAX_CONTINUATIONS + 1)
    agent, _ = build(tmp_path, replies)
    with pytest.raises(AgentError) as info:
        await agent.run()
    assert info.value.reason == "length"
    assert meta(agent)["stop_reason"] == "length" and meta(agent)["answer"] is None


async def test_tool_call_cut_at_the_token_limit_is_not_run(tmp_path):
    kernel = FakeKernel()
    cut = tool_call(raw='{"code": "print(next(iter([i for i in', finish="length")
    agent, host = build(tmp_path, [cut, text("ok")], kernel)
    assert await agent.run() == "ok"
    assert kernel.cells == []
    (result,) = tool_results(host.requests[1])
    assert "cut off by the endpoint's token limit" in result
    sent = next(m for m in host.requests[1] if m.get("tool_calls"))
    assert json.loads(sent["tool_calls"][0]["function"]["arguments"]) == {}


async def test_context_window_keeps_the_last_turns(tmp_path):
    replies = [tool_call(f"step{i}") for i in range(4)] + [text("ok")]
    agent, host = build(tmp_path, replies, max_turns_in_context=2)
    await agent.run()
    last = host.requests[-1]
    codes = [
        json.loads(m["tool_calls"][0]["function"]["arguments"])["code"]
        for m in last
        if m.get("tool_calls")
    ]
    assert codes == ["step2", "step3"]
    assert any("dropped from your context" in str(m.get("content")) for m in last)


async def test_cancelled_send_rolls_the_context_back(tmp_path):
    agent, host = build(tmp_path, [text("first"), text("never")])
    await agent.open()
    assert await agent.send("one") == "first"
    before = agent.context.messages()
    host.block = asyncio.Event()
    turn = asyncio.ensure_future(agent.send("two"))
    while len(host.requests) < 2:
        await asyncio.sleep(0)
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn
    assert agent.context.messages() == before
    assert any(line.get("event") == "turn_cancelled" for line in log_lines(agent))
    await agent.close()


async def test_inputs_are_reloaded_after_the_kernel_lost_its_state(tmp_path):
    died = ExecResult("", "died", ["the kernel died"])
    kernel = FakeKernel({"boom": died})
    packed = ([{"name": "data", "type": "str", "size": "3 characters"}], [b"x"])
    agent, _ = build(tmp_path, [tool_call("boom"), text("ok")], kernel, inputs=packed)
    assert await agent.run() == "ok"
    # at start, and again after the death
    assert kernel.cells == [
        "await rlm.inkernel.load_inputs()",
        "boom",
        "await rlm.inkernel.load_inputs()",
    ]


async def test_agent_error_keeps_its_bare_message(tmp_path):
    agent, _ = build(tmp_path, [tool_call("1")], max_turns=1)
    with pytest.raises(AgentError) as info:
        await agent.run()
    assert "(session:" not in info.value.message
    assert str(agent.log.path) in str(info.value)
    assert meta(agent)["error"] == info.value.message
