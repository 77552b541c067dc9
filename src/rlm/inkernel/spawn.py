"""``rlm.spawn`` inside a kernel: a persistent sub-agent and its handle, :class:`Child`.

The orchestrator (:mod:`rlm.runtime.spawned`) owns the child: its kernel, history, log and
limits. The handle only names it in ``send_request`` / ``close_request`` messages, so a
handle copied or kept past its child's end can do nothing but get a clear error.
"""

from __future__ import annotations

from typing import Any

from rlm import inkernel

__all__ = ["Child", "spawn"]


class Child:
    """A spawned sub-agent: ``await child.send(message)`` runs one turn and returns its
    answer, with the child's kernel variables and history kept from turn to turn; ``await
    child.close()`` ends it (closing twice is fine). It also ends when the agent that spawned
    it ends. Two sends at once run one after the other, in the order they arrived."""

    def __init__(self, name: str, session_path: str, answer: str | None) -> None:
        self.name = name
        """The child's folder name (``sub-1a2b3c``)."""
        self.session_path = session_path
        """The child's session folder (its ``messages.jsonl`` and ``meta.json``)."""
        self.answer = answer
        """The answer to the last turn (``spawn``'s task, then each ``send``)."""

    def __repr__(self) -> str:
        return f"<rlm.Child {self.name}>"

    async def send(self, message: str) -> str:
        """One turn: the child answers ``message`` (``rlm.AgentError`` if it cannot)."""
        content = {"child": self.name, "message": message, "cell": inkernel._current_cell()}
        reply, _ = await inkernel._client().request("send_request", content)
        if reply.get("status") != "ok":
            raise inkernel._decode_error(reply)
        self.answer = str(reply["answer"])
        return self.answer

    async def close(self) -> None:
        """End the child now: its kernel shuts down and its log is closed."""
        reply, _ = await inkernel._client().request("close_request", {"child": self.name})
        if reply.get("status") != "ok":
            raise inkernel._decode_error(reply)


async def spawn(
    task: str | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    max_turns: int | None = None,
    tools: list[str] | str | None = None,
) -> Child:
    """Start a persistent sub-agent (options as ``rlm.run``); ``task``, when given, is its
    first turn, and its answer is ``child.answer``."""
    content, data = inkernel.child_request(task, inputs, model, max_turns, tools)
    reply, _ = await inkernel._client().request("spawn_request", content, data)
    if reply.get("status") != "ok":
        raise inkernel._decode_error(reply)
    return Child(str(reply["child"]), str(reply["session_path"]), reply.get("answer"))
