"""Persistent sub-agents: the orchestrator's side of ``rlm.spawn`` and ``child.send``.

``rlm.run`` starts a child, runs it to one answer and ends it, all inside the calling cell.
A spawned child instead keeps its kernel and its history between turns: the parent's cell
sends ``spawn_request`` (the child is created and opened, and runs ``task`` if one is given),
then ``send_request`` per turn, then ``close_request``. The orchestrator keeps each spawned
child here, keyed by its parent and folder name, so only the agent that spawned a child can
talk to it.

Lifetime. A spawned child is **not** bound to the cell that spawned it (that is the point of
it): it lives until it is closed, or until its parent agent ends, for whatever reason,
cancellation included (:meth:`Spawned.parent_ending`, called from the parent's cleanup before
its own kernel stops). A *turn* is bound to its cell, like ``rlm.run``: a ``send_request`` from
a cell that has ended is refused, and a cell that ends while its turn runs cancels that turn
(the child rolls its history back to before the message and stays usable).

Limits are ``rlm.run``'s: the depth limit and the cost budget are checked at spawn and at each
turn, and a turn holds a ``RLM_MAX_CONCURRENCY`` slot of the child's depth while it runs (an
idle child holds none). Two turns of one child never overlap: the second ``send`` waits for
the first (a lock per child), as two messages to one person are read in order.

``meta.json`` of the parent lists the child with ``status`` ``busy`` during a turn, ``idle``
between turns, and ``done`` (or ``cancelled``) once it has ended.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlm.agent import events as ev
from rlm.config import Settings, derive_settings
from rlm.control.dispatch import Request
from rlm.control.inputs import Spilled
from rlm.errors import AgentError, ConfigError, DepthLimitError, RLMError
from rlm.runtime import agents
from rlm.schema.control import (
    CloseReply,
    CloseRequest,
    SendReply,
    SendRequest,
    SpawnReply,
    SpawnRequest,
    encode_error,
)

if TYPE_CHECKING:
    from rlm.agent.loop import Agent
    from rlm.runtime.orchestrator import Orchestrator

__all__ = ["MESSAGES", "Spawned"]

#: The control messages this module serves.
MESSAGES = frozenset({"spawn_request", "send_request", "close_request"})

_CELL_ENDED = (
    "the cell that called child.send has ended: a turn belongs to the cell that sends it, so "
    "await it (or the task that runs it) before the cell ends"
)

Reply = tuple[dict[str, Any], list[bytes]]


@dataclass
class _Child:
    """One spawned child as its parent's handle names it."""

    agent: Agent
    entry: dict[str, Any]
    """Its line in the parent's ``children`` list."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the running turn: a second ``send`` waits for it."""
    closed: bool = False


class Spawned:
    """The spawned children of every agent of one orchestrator."""

    def __init__(self, host: Orchestrator) -> None:
        self._host = host
        self._children: dict[tuple[str, str], _Child] = {}

    def count(self, parent: Agent) -> int:
        """Children of ``parent`` that are alive (idle or busy)."""
        return sum(1 for owner, _ in self._children if owner == parent.id)

    async def handle(self, parent: Agent, req: Request) -> Reply:
        """Serve one spawn, send or close request of ``parent``'s kernel."""
        try:
            if req.msg_type == "spawn_request":
                return await self._spawn(parent, req)
            if req.msg_type == "send_request":
                send: SendRequest = SendRequest.parse(req.content, "send_request")
                if send.cell is not None and send.cell != parent.running_cell:
                    raise RLMError(_CELL_ENDED)
                answer = await self._turn(parent, self._find(parent, send.child), send.message)
                return SendReply(answer=answer).content(), []
            close: CloseRequest = CloseRequest.parse(req.content, "close_request")
            child = self._children.get((parent.id, close.child))
            if child is not None:  # closing twice is not an error
                async with child.lock:  # after a turn that is running
                    await self._close(parent, child)
            return CloseReply().content(), []
        except RLMError as exc:
            return encode_error(exc), []

    async def _spawn(self, parent: Agent, req: Request) -> Reply:
        depth = parent.depth + 1
        if depth > parent.settings.max_depth:
            raise DepthLimitError(
                f"no sub-agent allowed: depth {depth} exceeds RLM_MAX_DEPTH="
                f"{parent.settings.max_depth}"
            )
        request: SpawnRequest = SpawnRequest.parse(req.content, "spawn_request")
        if len(request.inputs) != len(req.buffers):
            raise ConfigError("inputs: malformed input list")
        tools = request.tools
        settings: Settings = derive_settings(
            parent.settings,
            model=request.model,
            max_turns=request.max_turns,
            tools=",".join(tools) if isinstance(tools, list) else tools,
        )
        self._host.budget.require_price(settings.model)
        self._host.budget.check("sub-agent")
        if request.cell is not None and request.cell != parent.running_cell:
            raise RLMError(_CELL_ENDED.replace("child.send", "rlm.spawn"))
        infos = [info.content() for info in request.inputs]
        task = request.task or ""
        blobs: list[bytes | Spilled] = list(req.buffers)
        agent = agents.new_child(self._host, parent, settings, task, (infos, blobs))
        self._host.agents[agent.id] = agent
        name = agent.log.path.name
        child = _Child(agent, {"id": name, "task": task[:200], "status": "idle"})
        self._children[(parent.id, name)] = child
        parent.child_changed(child.entry)
        parent.emit(ev.ChildSpawned, child_id=agent.id, task=task)
        try:
            await agent.open()
        except BaseException as exc:
            await self._close(parent, child, exc)
            raise
        answer = await self._turn(parent, child, task) if request.task else None
        return SpawnReply(child=name, session_path=str(agent.log.path), answer=answer).content(), []

    def _find(self, parent: Agent, name: str) -> _Child:
        child = self._children.get((parent.id, name))
        if child is None:
            raise RLMError(f"the spawned child {name!r} is closed (or was never spawned here)")
        return child

    async def _turn(self, parent: Agent, child: _Child, message: str) -> str:
        """One turn of ``child``: after any turn already running, in a concurrency slot of
        its depth, cancelled with the cell that sent it."""
        current = asyncio.current_task()
        if current is not None:
            parent.adopt_cell_child(current)  # the cell's end cancels the turn
        async with child.lock:
            if child.closed:
                raise RLMError("the spawned child was closed while this send waited")
            async with self._host.slot(child.agent.depth):
                self._host.budget.check("sub-agent turn")
                child.entry["status"] = "busy"
                parent.child_changed(child.entry)
                try:
                    return await child.agent.send(message)
                except AgentError as exc:
                    exc.session_path = str(child.agent.log.path)
                    raise
                finally:
                    if not child.closed:
                        child.entry["status"] = "idle"
                        parent.child_changed(child.entry)
                        parent.log.flush()  # a turn's end is where readers look

    async def _close(self, parent: Agent, child: _Child, exc: BaseException | None = None) -> None:
        """End ``child``: its running turn is cancelled, then it closes like any agent."""
        if child.closed:
            return
        child.closed = True
        self._children.pop((parent.id, child.agent.log.path.name), None)
        try:
            await child.agent.close(exc)
        finally:
            cancelled = isinstance(exc, asyncio.CancelledError)
            child.entry["status"] = "cancelled" if cancelled else "done"
            parent.child_changed(child.entry)
            parent.log.flush()

    async def parent_ending(self, parent: Agent) -> None:
        """``parent`` is ending: close every child it spawned (kernels included) first."""
        children = [c for (owner, _), c in self._children.items() if owner == parent.id]
        for child in children:
            await asyncio.shield(self._close(parent, child))
