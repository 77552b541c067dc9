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

Many requests at once (``rlm.llm_batch``) travel as batches, one signed message for all the
requests a kernel's loop made in one turn, and one for all the replies finished in one turn
of the orchestrator's loop (a message and its signature, sent and checked, per batch, not
per call)::

    rlm_request  content {type: "batch_request", body: {items: [{id, type, body, buffers}]}}
    rlm_reply    content {type: "batch_reply",   body: {items: [{id, type, body, buffers}]}}

``buffers`` is how many of the message's buffers belong to the item, in order; each item's
``body`` has its own ``buffer_sha256``. An item's ``id`` stands for a request's ``msg_id``:
a ``cancel_request`` names it, its reply carries it. A lone request or reply is sent as
above, as itself.

Kept free of ZeroMQ: a kernel handle gives :meth:`KernelControl.on_request` each IOPub
``rlm_request`` (and :meth:`KernelControl.on_invalid` each message that failed its check) and
implements :class:`ReplyLink`, so a kernel reached any other way (a gateway's websocket) uses
the same path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from rlm.control.dispatch import Dispatcher, Request

__all__ = ["REPLY", "REQUEST", "KernelControl", "ReplyLink"]

log = logging.getLogger("rlm.control.channel")

#: The custom message types of this path.
REQUEST = "rlm_request"
REPLY = "rlm_reply"


class ReplyLink(Protocol):
    """What a kernel handle offers the control path: one reply sent on its shell channel,
    to its control subshell, signed as that kernel's messages are."""

    def send_rlm_reply(
        self, parent: dict[str, Any], content: dict[str, Any], buffers: list[bytes]
    ) -> None: ...


#: Most replies in one batch message, and the most bytes of buffers it gathers.
BATCH_ITEMS = 256
BATCH_BYTES = 8 * 1024 * 1024


class KernelControl:
    """The orchestrator's end of one agent's kernel: IOPub requests in, shell replies out."""

    def __init__(self, dispatcher: Dispatcher, agent_id: str, link: ReplyLink) -> None:
        self.dispatcher = dispatcher
        self.agent_id = agent_id
        self._link = link
        #: Replies of this turn of the loop, sent together at its end (None: none queued).
        self._outbox: list[tuple[dict[str, Any], str, str, dict[str, Any], list[bytes]]] | None
        self._outbox = None

    def on_invalid(self, why: str) -> None:
        """An IOPub message of this kernel failed its signature or replay check."""
        self.dispatcher.reject(f"agent {self.agent_id!r}: {why}")

    def on_request(self, msg: dict[str, Any]) -> None:
        """One verified ``rlm_request`` from this kernel's IOPub (one request, or a batch)."""
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
        if kind != "batch_request":
            self._receive(header, str(header.get("msg_id", "")), kind, body, buffers)
            return
        items = body.get("items")
        if not isinstance(items, list):
            self.on_invalid("a batch_request without items")
            return
        for item in items:
            count = item.get("buffers") if isinstance(item, dict) else None
            if not isinstance(count, int) or not 0 <= count <= len(buffers):
                self.on_invalid("a batch_request item with a bad buffer count")
                return
        for item in items:
            kind, body = item.get("type"), item.get("body")
            mine, buffers = buffers[: item["buffers"]], buffers[item["buffers"] :]
            if (
                not isinstance(kind, str)
                or not kind.endswith("_request")
                or kind == "batch_request"
            ):
                self.on_invalid("a batch_request item without a request type")
            elif not isinstance(body, dict):
                self.on_invalid(f"{kind} without a body")
            else:
                self._receive(header, str(item.get("id", "")), kind, body, mine)

    def _receive(
        self,
        header: dict[str, Any],
        request_id: str,
        kind: str,
        body: dict[str, Any],
        buffers: list[bytes],
    ) -> None:
        request = Request(self.agent_id, kind, request_id, body, buffers)

        async def respond(reply_type: str, reply: dict[str, Any], data: list[bytes]) -> None:
            self._queue(header, request_id, reply_type, reply, data)

        self.dispatcher.receive(request, respond)

    def _queue(
        self,
        header: dict[str, Any],
        request_id: str,
        reply_type: str,
        body: dict[str, Any],
        buffers: list[bytes],
    ) -> None:
        """Send this reply at the end of this turn of the loop, with the others of the turn."""
        if self._outbox is None:
            self._outbox = []
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append((header, request_id, reply_type, body, buffers))

    def _flush(self) -> None:
        replies, self._outbox = self._outbox or [], None
        while replies:
            batch, size = [replies[0]], sum(map(len, replies[0][4]))
            for reply in replies[1:]:
                more = sum(map(len, reply[4]))
                if len(batch) >= BATCH_ITEMS or size + more > BATCH_BYTES:
                    break
                batch.append(reply)
                size += more
            replies = replies[len(batch) :]
            self._send(batch)

    def _send(
        self, batch: list[tuple[dict[str, Any], str, str, dict[str, Any], list[bytes]]]
    ) -> None:
        try:
            if len(batch) == 1 and batch[0][0].get("msg_id") == batch[0][1]:
                header, _, reply_type, body, buffers = batch[0]  # answers a lone request
                self._link.send_rlm_reply(header, {"type": reply_type, "body": body}, buffers)
                return
            items = [
                {"id": request_id, "type": reply_type, "body": body, "buffers": len(buffers)}
                for _, request_id, reply_type, body, buffers in batch
            ]
            self._link.send_rlm_reply(
                batch[-1][0],
                {"type": "batch_reply", "body": {"items": items}},
                [buf for *_, buffers in batch for buf in buffers],
            )
        except Exception:  # the kernel went away meanwhile: nobody to answer
            log.debug("control reply not sent", exc_info=True)
