"""``rlm --acp`` driven as an editor drives it: a real ``rlm --acp`` subprocess, the
``agent-client-protocol`` package's client side over real pipes, real kernels and the
scripted model. Every byte the agent writes to stdout is kept and must be a JSON-RPC
message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import acp
import pytest
from acp.schema import (
    AgentMessageChunk,
    EnvVariable,
    McpServerStdio,
    ToolCallProgress,
    ToolCallStart,
    UserMessageChunk,
)

from conftest import read_log, sessions
from helpers import run_cli
from scripted_model import ScriptedModel, fault, ipython, reply

#: A host function that prints in the orchestrator: without the stdout guard, its line would
#: land in the protocol stream.
STRAY = '''
def shout(text: str) -> str:
    """Print in the orchestrator (stdout) and return the text."""
    print("STRAY-PRINT", text, flush=True)
    return text.upper()

__all__ = ["shout"]
'''


class Editor:
    """The client side: records every session update, answers nothing else."""

    def __init__(self) -> None:
        self.updates: list[Any] = []
        self.changed = asyncio.Event()

    async def session_update(self, session_id: str, update: Any, **_: Any) -> None:
        self.updates.append(update)
        self.changed.set()

    async def request_permission(self, *args: Any, **kwargs: Any) -> Any:
        raise acp.RequestError.method_not_found("session/request_permission")

    def on_connect(self, conn: Any) -> None:
        pass

    async def wait_for(self, predicate: Any, timeout: float = 60) -> Any:
        async def seen() -> Any:
            while True:
                for update in self.updates:
                    if predicate(update):
                        return update
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(seen(), timeout)

    def of(self, kind: type) -> list[Any]:
        return [u for u in self.updates if isinstance(u, kind)]


@dataclass
class Agent:
    conn: Any
    editor: Editor
    process: asyncio.subprocess.Process
    stdout: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def rlm_acp(work: Path, stderr: Path, *args: str) -> AsyncIterator[Agent]:
    """``rlm --acp`` with its stdout teed: every line is kept, then handed to the client."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rlm",
        "--acp",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr.open("ab"),
        cwd=work,
        env=dict(os.environ),
    )
    assert process.stdin is not None and process.stdout is not None
    tee = asyncio.StreamReader(limit=50 * 1024 * 1024)
    agent = Agent(None, Editor(), process)

    async def copy() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            agent.stdout.append(line)
            tee.feed_data(line)
        tee.feed_eof()

    copier = asyncio.create_task(copy())
    agent.conn = acp.connect_to_agent(agent.editor, process.stdin, tee)
    try:
        init = await asyncio.wait_for(agent.conn.initialize(protocol_version=1), 60)
        assert init.agent_info.name == "rlm" and init.agent_capabilities.load_session
        yield agent
    finally:
        process.stdin.close()  # the editor goes away: rlm ends its sessions and exits
        try:
            await asyncio.wait_for(process.wait(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await copier
            await agent.conn.close()
    for line in agent.stdout:  # nothing but protocol messages on stdout
        assert json.loads(line)["jsonrpc"] == "2.0", line


def messages(updates: list[Any]) -> list[str]:
    """The agent's messages as an editor shows them: consecutive text chunks (the reply as it
    streams) joined, any other update in between starting a new message."""
    said: list[str] = []
    joined = False
    for update in updates:
        if isinstance(update, AgentMessageChunk):
            if joined:
                said[-1] += update.content.text
            else:
                said.append(update.content.text)
            joined = True
        else:
            joined = False
    return said


def text_of(prompt: str) -> list[Any]:
    return [acp.text_block(prompt)]


async def test_two_prompts_keep_kernel_state_stream_tool_calls_and_load_resumes(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path
) -> None:
    work = Path.cwd()
    (tmp_path / "stray.py").write_text(STRAY)
    stderr = tmp_path / "stderr.txt"
    model.script(
        reply("Setting x.", ipython("x = 41\nprint('x set')")),
        reply("x is set"),
        reply(None, ipython("print(x + 1, await shout('hi'))")),
        reply("42"),
    )
    async with rlm_acp(work, stderr, "--functions", str(tmp_path / "stray.py")) as agent:
        new = await agent.conn.new_session(cwd=str(work), mcp_servers=[])
        sid = new.session_id
        first = await agent.conn.prompt(session_id=sid, prompt=text_of("set x"))
        assert first.stop_reason == "end_turn"
        second = await agent.conn.prompt(session_id=sid, prompt=text_of("what is x + 1?"))
        assert second.stop_reason == "end_turn"
        editor = agent.editor
        starts, ends = editor.of(ToolCallStart), editor.of(ToolCallProgress)
        assert [s.kind for s in starts] == ["execute", "execute"]
        assert starts[0].raw_input == {"code": "x = 41\nprint('x set')"}
        assert starts[1].title == "ipython: print(x + 1, await shout('hi'))"
        assert [(e.tool_call_id, e.status) for e in ends] == [
            (starts[0].tool_call_id, "completed"),
            (starts[1].tool_call_id, "completed"),
        ]
        assert ends[1].raw_output["output"].startswith("42 HI")
        assert messages(editor.updates) == ["Setting x.", "x is set", "42"]
        # streamed: the replies came in more pieces than there are messages
        assert len(editor.of(AgentMessageChunk)) > 3
    assert "STRAY-PRINT hi" in stderr.read_text()
    (folder,) = sessions(rlm_env)
    assert folder.name == sid
    # session/load: the same session in a fresh kernel, its conversation replayed
    model.script(reply("still here"))
    async with rlm_acp(work, stderr) as agent:
        await agent.conn.load_session(cwd=str(work), session_id=sid, mcp_servers=[])
        replayed = [
            (type(u).__name__, u.content.text)
            for u in agent.editor.updates
            if isinstance(u, (UserMessageChunk, AgentMessageChunk))
        ]
        assert replayed == [
            ("UserMessageChunk", "set x"),
            ("AgentMessageChunk", "Setting x."),
            ("AgentMessageChunk", "x is set"),
            ("UserMessageChunk", "what is x + 1?"),
            ("AgentMessageChunk", "42"),
        ]
        done = await agent.conn.prompt(session_id=sid, prompt=text_of("and now?"))
        assert done.stop_reason == "end_turn"
    sent = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"]
    assert "what is x + 1?" in sent and sent[-1].endswith("and now?")
    assert sessions(rlm_env) == [folder]


async def test_cancel_mid_cell_rolls_the_turn_back_and_the_session_goes_on(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path
) -> None:
    work = Path.cwd()
    model.script(
        reply(
            None,
            ipython("import time\ny = 1\nopen('started', 'w').close()\ntime.sleep(120)"),
        ),
        reply(None, ipython("print('y' in globals())")),
        reply("fresh"),
    )
    async with rlm_acp(work, tmp_path / "stderr.txt") as agent:
        sid = (await agent.conn.new_session(cwd=str(work), mcp_servers=[])).session_id
        turn = asyncio.create_task(agent.conn.prompt(session_id=sid, prompt=text_of("sleep")))
        start = await agent.editor.wait_for(lambda u: isinstance(u, ToolCallStart))

        async def cell_running() -> None:  # the cell marks its start in the working folder
            while not (work / "started").exists():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(cell_running(), 60)
        await agent.conn.cancel(session_id=sid)
        response = await asyncio.wait_for(turn, 60)
        assert response.stop_reason == "cancelled"
        (end,) = agent.editor.of(ToolCallProgress)
        assert end.tool_call_id == start.tool_call_id and end.status == "failed"
        again = await agent.conn.prompt(session_id=sid, prompt=text_of("after"))
        assert again.stop_reason == "end_turn"
        # the kernel was interrupted, not restarted: what the cell did before stays
        assert agent.editor.of(ToolCallProgress)[1].raw_output["output"].startswith("True")
    last = model.requests[-1]["messages"]
    assert [m["content"] for m in last if m["role"] == "user"] == ["after"]  # rolled back
    assert "time.sleep" not in json.dumps(last)
    (folder,) = sessions(rlm_env)
    assert any(line.get("event") == "turn_cancelled" for line in read_log(folder))


async def test_a_sub_agent_is_a_tool_call_that_starts_and_finishes(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.delenv("RLM_HOME")  # the default .rlm: in the editor's folder, not rlm's
    work = Path.cwd()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model.script(
        reply(None, ipython("import os\nprint(await rlm.run('child: add 1 and 2'), os.getcwd())")),
        reply("the child said 3"),
        match="parent",
    )
    model.script(reply("3"), match="child:")
    async with rlm_acp(elsewhere, tmp_path / "stderr.txt") as agent:
        sid = (await agent.conn.new_session(cwd=str(work), mcp_servers=[])).session_id
        done = await agent.conn.prompt(session_id=sid, prompt=text_of("parent task"))
        assert done.stop_reason == "end_turn"
        updates = agent.editor.updates
    flow = [
        (type(u).__name__, getattr(u, "title", None) or getattr(u, "status", None))
        for u in updates
        if isinstance(u, (ToolCallStart, ToolCallProgress))
    ]
    assert flow == [
        ("ToolCallStart", "ipython: import os"),
        ("ToolCallStart", "sub-agent: child: add 1 and 2"),
        ("ToolCallProgress", "completed"),
        ("ToolCallProgress", "completed"),
    ]
    ends = [u for u in updates if isinstance(u, ToolCallProgress)]
    assert ends[1].raw_output["output"].startswith(f"3 {work}")  # the kernel runs in the cwd
    assert [p.name for p in sessions(work / ".rlm")] == [sid] and not (elsewhere / ".rlm").exists()
    sub = [u for u in updates if isinstance(u, ToolCallStart)][1]
    assert sub.kind == "other" and sub.raw_input["depth"] == 1
    # the child's own text is not the editor's conversation; the root's is
    assert messages(agent.editor.updates) == ["the child said 3"]


async def test_an_endpoint_error_fails_the_prompt_and_the_process_stays_up(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_RETRY_ATTEMPTS", "1")
    monkeypatch.setenv("RLM_MAX_TURNS", "2")
    work = Path.cwd()
    model.script(
        fault(400, '{"error": {"message": "scripted bad request"}}'),
        reply(None, ipython("print(await fake.env(name='FAKE_TOKEN'))")),
        reply("fine"),
        reply(None, ipython("1")),
        reply(None, ipython("2")),
    )
    # an MCP server the editor passes: its tools are kernel functions, its env stays out
    server = McpServerStdio(
        name="fake",
        command=sys.executable,
        args=[str(Path(__file__).with_name("mcp_fake_server.py"))],
        env=[EnvVariable(name="FAKE_TOKEN", value="from-the-editor")],
    )
    async with rlm_acp(work, tmp_path / "stderr.txt") as agent:
        sid = (await agent.conn.new_session(cwd=str(work), mcp_servers=[server])).session_id
        with pytest.raises(acp.RequestError) as failed:
            await agent.conn.prompt(session_id=sid, prompt=text_of("first"))
        assert "scripted bad request" in str(failed.value)
        assert failed.value.data["reason"] == "model_error"
        again = await agent.conn.prompt(session_id=sid, prompt=text_of("second"))
        assert again.stop_reason == "end_turn"
        (end,) = agent.editor.of(ToolCallProgress)
        assert end.raw_output["output"].startswith("{'result': 'from-the-editor'}")
        stopped = await agent.conn.prompt(session_id=sid, prompt=text_of("loop forever"))
        assert stopped.stop_reason == "max_turn_requests"
        assert agent.process.returncode is None
    assert messages(agent.editor.updates) == [
        "fine",
        "rlm: stopped after 2 turns without a final answer (RLM_MAX_TURNS)",
    ]


def test_acp_refuses_a_prompt_on_the_command_line(rlm_env: Path) -> None:
    done = run_cli("--acp", "a task")
    assert done.returncode == 2 and done.stdout == ""
    assert "--acp takes no prompt" in done.stderr
