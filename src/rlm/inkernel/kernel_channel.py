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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rlm.control.dispatch import buffer_digests
from rlm.errors import ConfigError

__all__ = ["KernelChannelClient", "supports_subshells"]

log = logging.getLogger("rlm.inkernel")

REQUEST, REPLY = "rlm_request", "rlm_reply"

Reply = tuple[dict[str, Any], list[bytes]]


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
        msg = self._session.msg(REQUEST, content={"type": msg_type, "body": body}, parent=parent)
        frames = self._session.serialize(msg, ident=[REQUEST.encode()])
        largest = max(len(part) for part in [*frames, *buffers])
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
        msg_id = msg["header"]["msg_id"]
        with self._lock:
            self._pending[msg_id] = (loop, future)
        try:
            self._send(frames, buffers)
            return await future
        except asyncio.CancelledError:
            cancel = self._session.msg(
                REQUEST,
                content={
                    "type": "cancel_request",
                    "body": {"request_id": msg_id, "buffer_sha256": []},
                },
                parent=parent,
            )
            self._send(self._session.serialize(cancel, ident=[REQUEST.encode()]), ())
            raise
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)

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
        parent_id = str((reply.get("parent_header") or {}).get("msg_id", ""))
        with self._lock:
            waiting = self._pending.get(parent_id)
        if waiting is None:  # its request was cancelled, or it answers nothing of ours
            return True
        content = reply.get("content") or {}
        body = content.get("body") if isinstance(content, dict) else None
        buffers = [bytes(b) for b in reply.get("buffers") or []]
        loop, future = waiting
        value: Reply | BaseException = (body, buffers)  # type: ignore[assignment]
        if not isinstance(body, dict) or body.get("buffer_sha256", []) != buffer_digests(buffers):
            value = RuntimeError("control reply failed its buffer check")
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
            loop.call_soon_threadsafe(_resolve, future, value)
        return True


def _resolve(future: asyncio.Future[Reply], value: Reply | BaseException) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
