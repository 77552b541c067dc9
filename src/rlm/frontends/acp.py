"""``rlm --acp``: rlm as an Agent Client Protocol agent, for editors (Zed and others).

The editor starts ``rlm --acp`` and speaks JSON-RPC over its stdin/stdout through the
``agent-client-protocol`` package. Each ACP session is one :class:`rlm.Session` (one root
agent, one kernel kept across prompts, one session folder whose id is the ACP session id):

- ``session/new`` opens it in the editor's working directory, with the editor's MCP servers
  added to ``RLM_MCP_CONFIG``'s;
- ``session/prompt`` runs one turn, streaming the model's text, every tool call (input and
  output) and every sub-agent as ``session/update`` notifications (:mod:`.acp_updates`);
  the response's stop reason is ``end_turn``, ``cancelled``, ``max_turn_requests`` or
  ``max_tokens``, and any other failure (the endpoint's error, a dead kernel) is the
  request's JSON-RPC error, the session staying usable;
- ``session/cancel`` cancels the running turn as Ctrl-C does at the interactive prompt: the
  kernel is interrupted, the turn's sub-agents cancelled and the history rolled back;
- ``session/load`` resumes an earlier session (``rlm --resume``) in a fresh kernel and
  replays its conversation to the editor.

stdout carries nothing but protocol messages: the protocol gets its own copy of fd 1, and
fd 1 itself is pointed at stderr before anything else runs, so a kernel, a skill, a library
or a stray ``print`` can only ever write to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import acp
from acp.schema import (
    AgentCapabilities,
    HttpMcpServer,
    Implementation,
    McpServerStdio,
    PromptCapabilities,
)

from rlm.config import Settings
from rlm.errors import AgentError, ConfigError, RLMError
from rlm.frontends.acp_updates import Updates
from rlm.runtime.mcp import load_mcp_config
from rlm.runtime.session import Session
from rlm.schema import StopReason

__all__ = ["RlmAgent", "protect_stdout", "run_acp"]

#: rlm's stop reasons that end an ACP turn normally (any other failure is an error reply).
_STOP_REASONS: dict[str, str] = {
    StopReason.MAX_TURNS.value: "max_turn_requests",
    StopReason.TOKEN_BUDGET.value: "max_tokens",
    StopReason.LENGTH.value: "max_tokens",
}


@dataclass
class _Open:
    """One ACP session: its rlm session, its updates, and the turn running in it."""

    session: Session
    updates: Updates
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    turn: asyncio.Task[str] | None = None
    cancelled: bool = False


class RlmAgent:
    """The ACP agent: one :class:`_Open` per ACP session of the connection."""

    def __init__(self, settings: Settings, functions: list[Callable[..., Any]]) -> None:
        self.settings = settings
        self.functions = functions
        self.sessions: dict[str, _Open] = {}
        self._client: Any = None

    def on_connect(self, conn: Any) -> None:
        self._client = conn

    async def initialize(self, protocol_version: int, **_: Any) -> acp.InitializeResponse:
        from rlm import __version__

        return acp.InitializeResponse(
            protocol_version=min(protocol_version, acp.PROTOCOL_VERSION),
            agent_capabilities=AgentCapabilities(
                load_session=True,
                prompt_capabilities=PromptCapabilities(embedded_context=True),
            ),
            agent_info=Implementation(name="rlm", title="rlm", version=__version__),
        )

    async def new_session(
        self, cwd: str, mcp_servers: list[Any] | None = None, **_: Any
    ) -> acp.NewSessionResponse:
        opened = await self._open(cwd, mcp_servers, resume=None)
        return acp.NewSessionResponse(session_id=opened.session.id)

    async def load_session(
        self, cwd: str, session_id: str, mcp_servers: list[Any] | None = None, **_: Any
    ) -> acp.LoadSessionResponse:
        opened = self.sessions.get(session_id) or await self._open(
            cwd, mcp_servers, resume=session_id
        )
        for message in opened.session.history():
            text = message.get("content")
            if not isinstance(text, str) or not text.strip() or message.get("kind"):
                continue
            if message.get("role") == "user":
                opened.updates.put(acp.update_user_message_text(text))
            elif message.get("role") == "assistant":
                opened.updates.put(acp.update_agent_message_text(text))
        await opened.updates.drained()
        return acp.LoadSessionResponse()

    async def _open(self, cwd: str, mcp_servers: list[Any] | None, resume: str | None) -> _Open:
        updates = Updates(self._send)
        settings = self.settings
        if not settings.home.expanduser().is_absolute():  # .rlm of the editor's project
            settings = settings.model_copy(update={"home": Path(cwd) / settings.home})
        try:
            session = Session(
                settings=settings,
                on_event=updates,
                cwd=Path(cwd),
                resume=resume,
                functions=self.functions,
                mcp_config=self._mcp_config(mcp_servers or []),
            )
            await session.__aenter__()
        except ConfigError as exc:
            raise acp.RequestError.invalid_params({"message": str(exc)}) from None
        except RLMError as exc:
            raise acp.RequestError(-32603, f"rlm: {exc}") from None
        opened = _Open(session, updates)
        updates.session_id = session.id  # the updates name it: known once it is open
        self.sessions[session.id] = opened
        return opened

    async def _send(self, session_id: str, update: Any) -> None:
        await self._client.session_update(session_id=session_id, update=update)

    def _mcp_config(self, servers: list[Any]) -> dict[str, Any] | None:
        """``RLM_MCP_CONFIG``'s servers plus the editor's (an editor's server of the same
        name wins); None when neither has any."""
        merged: dict[str, Any] = {}
        if self.settings.mcp_config is not None:
            config = load_mcp_config(self.settings.mcp_config)
            merged = {name: spec.model_dump() for name, spec in config.servers.items()}
        for server in servers:
            if isinstance(server, McpServerStdio):
                merged[server.name] = {
                    "command": server.command,
                    "args": list(server.args),
                    "env": {var.name: var.value for var in server.env},
                }
            elif isinstance(server, HttpMcpServer):
                merged[server.name] = {
                    "url": server.url,
                    "headers": {h.name: h.value for h in server.headers},
                }
            else:
                print(
                    f"rlm: MCP server {server.name!r}: only stdio and http are supported",
                    file=sys.stderr,
                )
        return {"mcpServers": merged} if merged else None

    async def prompt(self, session_id: str, prompt: list[Any], **_: Any) -> acp.PromptResponse:
        opened = self._get(session_id)
        text = prompt_text(prompt)
        async with opened.lock:
            opened.cancelled = False
            opened.turn = asyncio.create_task(opened.session.send(text))
            try:
                await opened.turn
            except asyncio.CancelledError:
                if not opened.cancelled:
                    raise  # the connection is closing, not a session/cancel
                opened.updates.abandon()
                await opened.updates.drained()
                return acp.PromptResponse(stop_reason="cancelled")
            except AgentError as exc:
                await opened.updates.drained()
                stop = _STOP_REASONS.get(str(exc.reason))
                if stop is not None:
                    opened.updates.put(acp.update_agent_message_text(f"rlm: {exc.message}"))
                    await opened.updates.drained()
                    return acp.PromptResponse(stop_reason=stop)
                raise acp.RequestError(
                    -32603,
                    f"rlm: {exc.message}",
                    {"reason": str(exc.reason), "session": exc.session_path},
                ) from None
            finally:
                opened.turn = None
        await opened.updates.drained()
        return acp.PromptResponse(stop_reason="end_turn")

    async def cancel(self, session_id: str, **_: Any) -> None:
        opened = self.sessions.get(session_id)
        if opened is not None and opened.turn is not None and not opened.turn.done():
            opened.cancelled = True
            opened.turn.cancel()

    def _get(self, session_id: str) -> _Open:
        opened = self.sessions.get(session_id)
        if opened is None:
            raise acp.RequestError.invalid_params({"message": f"no session {session_id!r}"})
        return opened

    async def aclose(self) -> None:
        """End every session: cancel running turns, shut kernels and MCP servers down."""
        sessions, self.sessions = list(self.sessions.values()), {}
        for opened in sessions:
            if opened.turn is not None:
                opened.turn.cancel()
        for opened in sessions:
            with contextlib.suppress(Exception):
                await opened.session.__aexit__(None, None, None)
            await opened.updates.aclose()


def prompt_text(blocks: list[Any]) -> str:
    """One user message from a prompt's content blocks: text as it is, a resource link as a
    markdown link, an embedded text resource in a tagged block; other media are named."""
    parts: list[str] = []
    for block in blocks:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource_link":
            parts.append(f"[{block.name}]({block.uri})")
        elif kind == "resource" and isinstance(getattr(block.resource, "text", None), str):
            parts.append(
                f'<resource uri="{block.resource.uri}">\n{block.resource.text}\n</resource>'
            )
        else:
            parts.append(f"[{kind or 'content'} not supported by rlm]")
    return "\n".join(parts)


def protect_stdout() -> int:
    """Give the protocol its own copy of fd 1 and point fd 1 (and ``sys.stdout``) at stderr:
    kernels, skills, MCP servers and libraries inherit or write fd 1, never the protocol's.
    Returns the protocol's descriptor (not inherited by child processes)."""
    sys.stdout.flush()
    protocol = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


async def _streams(protocol_fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=50 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = os.fdopen(protocol_fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


async def run_acp(settings: Settings, functions: list[Callable[..., Any]], protocol_fd: int) -> int:
    """Serve ACP on stdin and ``protocol_fd`` until the editor closes stdin."""
    agent = RlmAgent(settings, functions)
    reader, writer = await _streams(protocol_fd)
    try:
        # the package's Protocol lists every optional method too; absent ones answer "not found"
        await acp.run_agent(cast(Any, agent), writer, reader)
    finally:
        await agent.aclose()
    return 0
