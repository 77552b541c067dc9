"""rlm's events as ACP ``session/update`` notifications, in the order they happen.

The root agent's text becomes ``agent_message_chunk``; each of its tool calls is a
``tool_call`` (with the call's input) and a ``tool_call_update`` (with its whole output,
``completed`` or ``failed``); every sub-agent of the tree (``rlm.run`` and ``rlm.spawn``, at
any depth) is a tool call of kind ``other`` that starts when the child starts and ends with
its status. Events arrive synchronously from the orchestrator; the updates are queued and
sent by one task, so a slow client never stops the agents, and :meth:`Updates.drained` lets a
prompt's response wait until every update of its turn is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from acp import (
    start_tool_call,
    text_block,
    tool_content,
    update_agent_message_text,
    update_agent_thought_text,
    update_tool_call,
)
from acp.schema import ToolKind

from rlm.agent import events as ev

__all__ = ["Updates"]

log = logging.getLogger("rlm.frontends.acp")

#: How each built-in tool is shown to the editor.
_KINDS: dict[str, ToolKind] = {
    "ipython": "execute",
    "bash": "execute",
    "edit": "edit",
    "summarize": "think",
}
#: The argument of each tool whose text is shown as the call's content.
_MAIN_ARGUMENT = {"ipython": "code", "bash": "command", "edit": "path", "summarize": "summary"}
_LANGUAGE = {"ipython": "python", "bash": "sh"}

#: ``send(session_id, update)``: one ``session/update`` notification to the client.
Send = Callable[[str, Any], Awaitable[None]]


class Updates:
    """The event callback of one ACP session and the queue of its updates."""

    def __init__(self, send: Send) -> None:
        self._send = send
        #: The ACP session id (the rlm session's), known once the session is open.
        self.session_id = ""
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._calls: dict[tuple[str, str], str] = {}
        self._agents: dict[str, str] = {}
        #: Root turns whose text already went out as it streamed (``ModelDelta``).
        self._streamed: set[int] = set()

    def __call__(self, event: ev.Event) -> None:
        for update in self._translate(event):
            self.put(update)

    def put(self, update: Any) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain(), name="rlm-acp-updates")
        self._queue.put_nowait(update)

    def abandon(self) -> None:
        """A cancelled turn: its tool calls and sub-agents that never finished end as
        ``failed`` (no event will finish them)."""
        for call in [*self._calls.values(), *self._agents.values()]:
            self.put(update_tool_call(call, status="failed", raw_output={"cancelled": True}))
        self._calls.clear()
        self._agents.clear()

    async def drained(self) -> None:
        """Wait until every queued update has been sent."""
        await self._queue.join()

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), 5)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            update = await self._queue.get()
            try:
                await self._send(self.session_id, update)
            except Exception:  # the client went away: the run goes on
                log.warning("could not send a session update", exc_info=True)
            finally:
                self._queue.task_done()

    def _translate(self, event: ev.Event) -> list[Any]:
        if isinstance(event, ev.ModelDelta) and event.depth == 0 and event.text:
            # The editor shows the reply as it is written; a retried request streams again
            # from the start, so the editor may see a cut first attempt before it.
            if event.part == "text":
                self._streamed.add(event.turn)
                return [update_agent_message_text(event.text)]
            if event.part == "reasoning":
                return [update_agent_thought_text(event.text)]
            return []
        if isinstance(event, ev.ModelResponse) and event.depth == 0:
            if event.turn in self._streamed:  # already sent, piece by piece
                self._streamed.discard(event.turn)
                return []
            return [update_agent_message_text(event.content)] if event.content.strip() else []
        if isinstance(event, ev.ToolStarted) and event.depth == 0:
            return [self._tool_started(event)]
        if isinstance(event, ev.ToolFinished) and event.depth == 0:
            call = self._calls.pop((event.agent_id, event.call_id), None)
            if call is None:
                return []
            return [
                update_tool_call(
                    call,
                    status="failed" if event.error else "completed",
                    content=[tool_content(text_block(event.output))],
                    raw_output={"output": event.output},
                )
            ]
        if isinstance(event, ev.AgentStarted) and event.parent_id is not None:
            call = f"agent-{next(self._ids)}"
            self._agents[event.agent_id] = call
            first = event.task.strip().splitlines()[0] if event.task.strip() else ""
            return [
                start_tool_call(
                    call,
                    f"sub-agent: {first[:80]}",
                    kind="other",
                    status="in_progress",
                    content=[tool_content(text_block(event.task))],
                    raw_input={"task": event.task, "agent": event.agent_id, "depth": event.depth},
                )
            ]
        if isinstance(event, ev.AgentFinished) and event.agent_id in self._agents:
            call = self._agents.pop(event.agent_id)
            return [
                update_tool_call(
                    call,
                    status="completed" if event.status == "done" else "failed",
                    raw_output={
                        "status": str(event.status),
                        "stop_reason": str(event.stop_reason),
                        "turns": event.turns,
                    },
                )
            ]
        return []

    def _tool_started(self, event: ev.ToolStarted) -> Any:
        call = f"tool-{next(self._ids)}"
        self._calls[(event.agent_id, event.call_id)] = call
        try:
            arguments: Any = json.loads(event.arguments) if event.arguments else {}
        except json.JSONDecodeError:
            arguments = event.arguments
        main = (
            arguments.get(_MAIN_ARGUMENT.get(event.name, ""))
            if isinstance(arguments, dict)
            else None
        )
        shown = main if isinstance(main, str) else event.arguments
        fence = _LANGUAGE.get(event.name)
        text = f"```{fence}\n{shown}\n```" if fence else shown
        return start_tool_call(
            call,
            f"{event.name}: {event.preview}" if event.preview else event.name,
            kind=_KINDS.get(event.name, "other"),
            status="in_progress",
            content=[tool_content(text_block(text))],
            raw_input=arguments,
        )
