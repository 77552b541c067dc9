"""One dispatcher for control requests, whatever carried them.

Two transports bring a kernel's requests to the orchestrator: the kernel's own Jupyter
channels (:mod:`rlm.control.kernel_channel`, the default) and the ipc socket
(:mod:`rlm.control.channel`, the fallback). Each authenticates a message its own way and
knows which agent sent it; from there on everything is here, once: the buffer digests are
checked (hashed off the event loop when large), a ``cancel_request`` cancels the request it
names, any other request runs the orchestrator's handler in a task of its own, and the reply
(an error reply if the handler failed) goes back through the ``respond`` callable of the
transport it came from. Rejections are counted and logged sparingly.

This module is imported by :mod:`rlm.control.channel`, which also runs in every kernel: no
pydantic at import time (the schema is imported where a request is handled).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlm.errors import RLMError

__all__ = [
    "HASH_ON_LOOP_BYTES",
    "Dispatcher",
    "Handler",
    "Request",
    "Respond",
    "buffer_digests",
]

log = logging.getLogger("rlm.control.channel")

#: Rejected messages are summarised: the first is logged with its reason, then at most one
#: line per this many seconds counts the rest (a flooding kernel must not flood stderr).
REJECT_REPORT_INTERVAL = 10.0

#: Buffers larger than this (in all) are hashed in a worker thread, not on the event loop
#: every agent of the run shares (SHA-256 runs at ~1 GB/s: a 300 MB input would stall it).
HASH_ON_LOOP_BYTES = 1 << 20


def buffer_digests(buffers: Sequence[bytes]) -> list[str]:
    return [hashlib.sha256(bytes(buf)).hexdigest() for buf in buffers]


@dataclass
class Request:
    """A verified request, as the orchestrator's handler receives it."""

    agent_id: str
    msg_type: str
    msg_id: str
    content: dict[str, Any]
    buffers: list[bytes]


Handler = Callable[[Request], Awaitable[tuple[dict[str, Any], list[bytes]] | None]]
#: How a transport sends one reply: its type (``run_reply``...), content (with the buffer
#: digests added) and buffers.
Respond = Callable[[str, dict[str, Any], list[bytes]], Awaitable[None]]


class Dispatcher:
    """Verified messages in, handler tasks and replies out; shared by both transports."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._checks: set[asyncio.Task[None]] = set()
        self.rejected = 0
        self._rejects_reported = 0
        self._last_reject_report = 0.0
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        self._report_rejects()
        tasks = [*self._tasks.values(), *self._checks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reject(self, why: str) -> None:
        self.rejected += 1
        if self.rejected == 1:
            log.warning("control channel: rejected a message (%s)", why)
            self._rejects_reported = 1
            self._last_reject_report = time.monotonic()
        elif time.monotonic() - self._last_reject_report >= REJECT_REPORT_INTERVAL:
            self._report_rejects()

    def _report_rejects(self) -> None:
        """One line counting the rejections not reported yet (none: no line)."""
        more = self.rejected - self._rejects_reported
        if more > 0:
            noun = "message" if more == 1 else "messages"
            log.warning("control channel: rejected %s more %s", f"{more:,}", noun)
        self._rejects_reported = self.rejected
        self._last_reject_report = time.monotonic()

    def receive(self, request: Request, respond: Respond) -> None:
        """An authenticated message of ``request.agent_id``: check its buffers against the
        digests in its signed content, then accept it (or reject it)."""
        if self.closed:
            return
        if sum(map(len, request.buffers)) > HASH_ON_LOOP_BYTES:
            # hashing hundreds of MB would stall every agent of the run: off the loop
            check = asyncio.create_task(self._verify_off_loop(request, respond))
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)
            return
        if request.content.get("buffer_sha256", []) != buffer_digests(request.buffers):
            self.reject(f"agent {request.agent_id!r}: buffer digest mismatch")
            return
        self._accept(request, respond)

    async def _verify_off_loop(self, request: Request, respond: Respond) -> None:
        digests = await asyncio.to_thread(buffer_digests, request.buffers)
        if request.content.get("buffer_sha256", []) != digests:
            self.reject(f"agent {request.agent_id!r}: buffer digest mismatch")
            return
        self._accept(request, respond)

    def _accept(self, request: Request, respond: Respond) -> None:
        """A verified message: cancel what it names, or handle it in a task of its own."""
        agent_id = request.agent_id
        if request.msg_type == "cancel_request":
            from rlm.schema.control import CancelRequest  # orchestrator side only (pydantic)

            try:
                cancel: CancelRequest = CancelRequest.parse(request.content, "cancel_request")
            except RLMError as exc:
                self.reject(f"agent {agent_id!r}: {exc}")
                return
            task = self._tasks.get((agent_id, cancel.request_id))
            if task is not None:
                task.cancel()
            return
        key = (agent_id, request.msg_id)
        task = asyncio.create_task(self._dispatch(request, respond))
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _dispatch(self, req: Request, respond: Respond) -> None:
        from rlm.schema.control import encode_error  # orchestrator side only (pydantic)

        try:
            result = await self._handler(req)
        except asyncio.CancelledError as exc:
            result = (encode_error(exc), [])
        except Exception as exc:
            log.exception("control handler failed")
            result = (encode_error(exc), [])
        if result is None or self.closed:
            return
        content, buffers = result
        if sum(map(len, buffers)) > HASH_ON_LOOP_BYTES:
            digests = await asyncio.to_thread(buffer_digests, buffers)
        else:
            digests = buffer_digests(buffers)
        content = {**content, "buffer_sha256": digests}
        try:
            await respond(req.msg_type.replace("_request", "_reply"), content, buffers)
        except Exception:  # the kernel went away meanwhile: nobody to answer
            log.debug("control reply not sent", exc_info=True)
