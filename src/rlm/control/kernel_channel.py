"""The control path over a kernel's own Jupyter channels: orchestrator side.

A cell's request (``rlm.run``, ``rlm.spawn``/``send``/``close``, ``rlm.llm``, host functions,
input transfer, cancellation) leaves its kernel as an ``rlm_request`` message on IOPub; the
answer goes back as an ``rlm_reply`` on the shell channel addressed to a **subshell** of that
kernel (ipykernel 7, JEP 91), whose thread takes it even while the kernel's main thread is
blocked in a cell (a cell's ``asyncio.run(rlm.run(...))``). The kernel side is
:mod:`rlm.inkernel.kernel_channel`. Nothing listens on the orchestrator: the kernel handle
that reads IOPub already exists, and so does its connection to the shell channel.

Wire format (the Jupyter message is signed by the kernel's own key; the kernel handle
verifies it, and ``jupyter_client``'s ``Session`` refuses a replayed signature)::

    rlm_request  content {type: "<kind>_request", body: {..., buffer_sha256}}  buffers
    rlm_reply    content {type: "<kind>_reply",  body: {..., buffer_sha256}}  buffers
                 parent_header = the request's header, header.subshell_id = the subshell

``body`` is what the ipc transport sends as a message's content (:mod:`rlm.schema.control`),
so both transports share one :class:`~rlm.control.dispatch.Dispatcher`. Which agent a request
speaks for is not in the message: it is the agent that owns the kernel whose IOPub carried it.

Kept free of ZeroMQ: a kernel handle gives :meth:`KernelControl.on_request` each IOPub
``rlm_request`` (and :meth:`KernelControl.on_invalid` each message that failed its check) and
implements :class:`ReplyLink`, so a kernel reached any other way (a gateway's websocket) uses
the same path.
"""

from __future__ import annotations

from typing import Any, Protocol

from rlm.control.dispatch import Dispatcher, Request

__all__ = ["REPLY", "REQUEST", "KernelControl", "ReplyLink"]

#: The custom message types of this path.
REQUEST = "rlm_request"
REPLY = "rlm_reply"


class ReplyLink(Protocol):
    """What a kernel handle offers the control path: one reply sent on its shell channel,
    to its control subshell, signed as that kernel's messages are."""

    def send_rlm_reply(
        self, parent: dict[str, Any], content: dict[str, Any], buffers: list[bytes]
    ) -> None: ...


class KernelControl:
    """The orchestrator's end of one agent's kernel: IOPub requests in, shell replies out."""

    def __init__(self, dispatcher: Dispatcher, agent_id: str, link: ReplyLink) -> None:
        self.dispatcher = dispatcher
        self.agent_id = agent_id
        self._link = link

    def on_invalid(self, why: str) -> None:
        """An IOPub message of this kernel failed its signature or replay check."""
        self.dispatcher.reject(f"agent {self.agent_id!r}: {why}")

    def on_request(self, msg: dict[str, Any]) -> None:
        """One verified ``rlm_request`` from this kernel's IOPub."""
        content = msg.get("content")
        kind = content.get("type") if isinstance(content, dict) else None
        body = content.get("body") if isinstance(content, dict) else None
        if not isinstance(kind, str) or not kind.endswith("_request"):
            self.on_invalid("an rlm_request without a request type")
            return
        if not isinstance(body, dict):
            self.on_invalid(f"{kind} without a body")
            return
        header = msg["header"]
        buffers = [bytes(b) for b in msg.get("buffers") or []]
        request = Request(self.agent_id, kind, str(header.get("msg_id", "")), body, buffers)

        async def respond(reply_type: str, reply: dict[str, Any], data: list[bytes]) -> None:
            self._link.send_rlm_reply(header, {"type": reply_type, "body": reply}, data)

        self.dispatcher.receive(request, respond)
