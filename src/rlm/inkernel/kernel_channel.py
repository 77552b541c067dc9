"""The control path over the kernel's own Jupyter channels: kernel side.

A request is published on IOPub as an ``rlm_request`` (its buffers as message buffers), and
its ``rlm_reply`` arrives on the shell channel, addressed to the subshell the orchestrator
created for this kernel (see :mod:`rlm.control.kernel_channel` for the wire format). The
subshell's thread resolves the future of the coroutine that waits, on whatever event loop
that coroutine runs: the kernel's own (an ``await`` in a cell) or the helper thread's of a
cell's ``asyncio.run`` (whose main thread is blocked, which is why the reply must not be
queued behind the running cell on the main shell).

Replies are taken before ipykernel's ``dispatch_shell``: dispatching sets the kernel's
"current parent" to the reply message (the display hook, display publisher and stream
fallbacks are global, not per thread), so the running cell's result would be sent under
the reply's parent and lost to the orchestrator, and it would publish a busy/idle pair per
reply. The reply's signature is checked by the kernel's ``Session`` (a replayed one is
refused), its buffers against the digests in its signed content.

Messages are sent with ``Session.serialize`` straight to the IOPub socket, never through
``Session.send``: the output cap (:mod:`rlm.inkernel.output`) wraps that, and must never
count or cut a control message.

Requests made in the same turn of an event loop (an ``rlm.llm_batch``, an ``asyncio.gather``
of sub-agents) leave in one ``batch_request`` message (see :mod:`rlm.control.kernel_channel`),
and the orchestrator answers those finished in the same turn of its loop in one
``batch_reply``: a message, its signature, its thread hops (IOPub thread, subshell thread,
back to the waiting loop) per batch rather than per call. Each item keeps its own id, so
each is cancelled, answered and checked on its own; a request cancelled before its batch
left is simply not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlm.control.dispatch import buffer_digests
from rlm.errors import ConfigError

__all__ = ["KernelChannelClient", "supports_subshells"]

log = logging.getLogger("rlm.inkernel")

REQUEST, REPLY = "rlm_request", "rlm_reply"
BATCH_REQUEST, BATCH_REPLY = "batch_request", "batch_reply"

#: Most requests in one batch message; a batch's bodies also stay under half the part limit.
BATCH_ITEMS = 256

Reply = tuple[dict[str, Any], list[bytes]]


@dataclass
class _Outgoing:
    """One request waiting for the end of its loop's turn to leave (with the others)."""

    id: str
    kind: str
    body: dict[str, Any]
    buffers: Sequence[bytes]
    size: int
    parent: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Outbox:
    """The requests of one event loop not sent yet (each loop flushes its own)."""

    items: list[_Outgoing] = field(default_factory=list)


def supports_subshells(kernel: Any) -> bool:
    """Whether this ipykernel can take a reply on a subshell (ipykernel 7 and later)."""
    return bool(getattr(kernel, "_supports_kernel_subshells", False))


class KernelChannelClient:
    """One signed request out on IOPub, its verified reply in from the control subshell.

    ``max_part`` is the largest message part the orchestrator reads on IOPub; a request with
    a larger part goes to ``fallback`` (the ipc socket) when there is one, else is refused
    with a clear error before anything is sent.
    """

    def __init__(
        self, kernel: Any, max_part: int, fallback: Callable[[], Any] | None = None
    ) -> None:
        self._kernel = kernel
        self._session = kernel.session
        self.max_part = max_part
        self._fallback = fallback
        self._pending: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Reply]]] = {}
        self._outboxes: dict[asyncio.AbstractEventLoop, _Outbox] = {}
        self._lock = threading.Lock()
        self._install()

    def _install(self) -> None:
        """Take ``rlm_reply`` messages ahead of ipykernel's shell dispatch (once per kernel
        process; a later client replaces the earlier one's pending table)."""
        kernel = self._kernel
        original = getattr(kernel, "_rlm_original_dispatch", None) or kernel.dispatch_shell
        kernel._rlm_original_dispatch = original

        async def dispatch_shell(msg: Any, /, subshell_id: str | None = None, **kw: Any) -> Any:
            if subshell_id is not None and len(msg) > 1 and self._take_reply(msg):
                return None
            return await original(msg, subshell_id=subshell_id, **kw)

        kernel.dispatch_shell = dispatch_shell

    def _send(self, frames: list[bytes], buffers: Sequence[bytes]) -> None:
        self._kernel.iopub_socket.send_multipart([*frames, *buffers])

    async def request(
        self, msg_type: str, content: dict[str, Any], buffers: Sequence[bytes] = ()
    ) -> Reply:
        body = {**content, "buffer_sha256": buffer_digests(buffers)}
        try:
            parent = self._kernel.get_parent("shell")
        except Exception:
            parent = {}
        size = len(self._session.pack(body))
        largest = max([size, *map(len, buffers)])
        if largest > self.max_part:
            if self._fallback is not None:
                return await self._fallback().request(msg_type, content, buffers)  # type: ignore[no-any-return]
            raise ConfigError(
                f"{msg_type}: a part of {largest:,} bytes is over the kernel channel's limit "
                f"of {self.max_part:,} bytes (RLM_MAX_MESSAGE_BYTES); save large data to a "
                "file and pass its path"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        item = _Outgoing(uuid.uuid4().hex, msg_type, body, buffers, size, parent)
        with self._lock:
            self._pending[item.id] = (loop, future)
        self._queue(loop, item)
        try:
            return await future
        except asyncio.CancelledError:
            if not self._unqueue(loop, item):  # it left already: the orchestrator cancels it
                # at once, not at the end of the turn: a cell's asyncio.run may be closing
                cancel = {"request_id": item.id, "buffer_sha256": []}
                self._send_batch(
                    [_Outgoing(uuid.uuid4().hex, "cancel_request", cancel, (), 0, item.parent)]
                )
            raise
        finally:
            with self._lock:
                self._pending.pop(item.id, None)

    def _queue(self, loop: asyncio.AbstractEventLoop, item: _Outgoing) -> None:
        """Send ``item`` at the end of this turn of ``loop``, with the others queued in it."""
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes[loop] = _Outbox()
            loop.call_soon(self._flush, loop)
        outbox.items.append(item)

    def _unqueue(self, loop: asyncio.AbstractEventLoop, item: _Outgoing) -> bool:
        outbox = self._outboxes.get(loop)
        if outbox is not None and item in outbox.items:
            outbox.items.remove(item)
            return True
        return False

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what ``loop`` queued: alone as itself, else in batches of a bounded size."""
        outbox = self._outboxes.pop(loop, None)
        items = outbox.items if outbox is not None else []
        batch: list[_Outgoing] = []
        size = 0
        for item in items:
            if batch and (len(batch) >= BATCH_ITEMS or size + item.size > self.max_part // 2):
                self._send_batch(batch)
                batch, size = [], 0
            batch.append(item)
            size += item.size
        if batch:
            self._send_batch(batch)

    def _send_batch(self, batch: list[_Outgoing]) -> None:
        if len(batch) == 1:
            (item,) = batch
            msg = self._session.msg(
                REQUEST, content={"type": item.kind, "body": item.body}, parent=item.parent
            )
            msg["header"]["msg_id"] = item.id  # its id: what the reply and a cancel name
            self._send(self._session.serialize(msg, ident=[REQUEST.encode()]), item.buffers)
            return
        entries = [
            {"id": item.id, "type": item.kind, "body": item.body, "buffers": len(item.buffers)}
            for item in batch
        ]
        content = {"type": BATCH_REQUEST, "body": {"items": entries, "buffer_sha256": []}}
        msg = self._session.msg(REQUEST, content=content, parent=batch[-1].parent)
        buffers = [buf for item in batch for buf in item.buffers]
        self._send(self._session.serialize(msg, ident=[REQUEST.encode()]), buffers)

    def _take_reply(self, raw: list[Any]) -> bool:
        """Runs on the subshell's thread. True when ``raw`` was an ``rlm_reply`` (taken,
        or refused and dropped); False leaves it to ipykernel."""
        session = self._session
        try:
            _, frames = session.feed_identities(raw, copy=False)
            header = session.deserialize(frames, content=False, copy=False)["header"]
        except Exception:
            return False
        if header.get("msg_type") != REPLY:
            return False
        try:
            reply = session.deserialize(frames, content=True, copy=False)
        except Exception as exc:  # a bad signature, a replay
            log.warning("rlm: refused a control reply (%s)", exc)
            return True
        content = reply.get("content") or {}
        buffers = [bytes(b) for b in reply.get("buffers") or []]
        body = content.get("body") if isinstance(content, dict) else None
        if isinstance(content, dict) and content.get("type") == BATCH_REPLY:
            items = body.get("items") if isinstance(body, dict) else None
            answers: list[tuple[str, Any, list[bytes]]] = []
            for entry in items if isinstance(items, list) else []:
                count = entry.get("buffers", 0) if isinstance(entry, dict) else -1
                if not isinstance(count, int) or not 0 <= count <= len(buffers):
                    log.warning("rlm: refused a malformed control reply batch")
                    return True
                answers.append((str(entry.get("id", "")), entry.get("body"), buffers[:count]))
                buffers = buffers[count:]
        else:
            parent_id = str((reply.get("parent_header") or {}).get("msg_id", ""))
            answers = [(parent_id, body, buffers)]
        self._answer(answers)
        return True

    def _answer(self, answers: list[tuple[str, Any, list[bytes]]]) -> None:
        """Resolve the waiting futures, one wake-up per waiting loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Reply | BaseException]]] = {}
        for request_id, body, buffers in answers:
            with self._lock:
                waiting = self._pending.get(request_id)
            if waiting is None:  # its request was cancelled, or it answers nothing of ours
                continue
            loop, future = waiting
            value: Reply | BaseException = (body, buffers)
            if not isinstance(body, dict) or body.get("buffer_sha256", []) != buffer_digests(
                buffers
            ):
                value = RuntimeError("control reply failed its buffer check")
            by_loop.setdefault(loop, []).append((future, value))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve_all, results)


def _resolve_all(results: list[tuple[Any, Reply | BaseException]]) -> None:
    for future, value in results:
        _resolve(future, value)


def _resolve(future: asyncio.Future[Reply], value: Reply | BaseException) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
