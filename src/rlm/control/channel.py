"""The ipc control transport between agent kernels and the orchestrator (the fallback).

Kernels whose ipykernel has subshells (7 and later) talk over their own Jupyter channels
instead (:mod:`rlm.control.kernel_channel`); this socket serves the others, and requests
with a part too large for the kernel's channels. Both transports hand verified requests to
the same :class:`~rlm.control.dispatch.Dispatcher`.

A ZeroMQ ROUTER bound on ``ipc://<run dir>/control`` (the run dir is 0700). Every kernel gets
the address, its agent id and a secret of its own in its environment, never the model API
key. Requests and replies are Jupyter-protocol messages signed with HMAC-SHA256 by
``jupyter_client.session.Session`` keyed with that secret; the agent id travels as the
routing frame before the signed part so the orchestrator knows which key to verify with.
A kernel therefore cannot speak for another agent (wrong key), and a captured message
cannot be replayed (``Session`` rejects a signature it has seen). Binary buffers are not
covered by the Jupyter signature, so their SHA-256 digests travel in the signed content.

Wire format (frames): ``[routing id] [agent id] <IDS|MSG> hmac header parent meta content
buffers...``. Message types: ``run_request`` → ``run_reply``, ``inputs_request`` →
``inputs_reply``, ``cancel_request`` (no reply); their content is specified in
:mod:`rlm.schema.control`, imported on the orchestrator side only: this module also runs in
every kernel, which should not pay for importing pydantic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import DELIM, Session

from rlm.control.dispatch import Dispatcher, Handler, Request, buffer_digests
from rlm.errors import ConfigError

__all__ = ["ControlClient", "ControlServer", "Request", "buffer_digests", "new_session"]

log = logging.getLogger("rlm.control.channel")

#: Largest message part either side accepts. A larger frame reaching the orchestrator is
#: dropped by ZeroMQ from its size header, unread (``MAXMSGSIZE``), and its connection closed;
#: the kernel side refuses to send one, so a cell gets a clear error instead of no reply.
MAX_FRAME_BYTES = 1024 * 1024 * 1024


def new_session(secret: str) -> Session:
    """A signing session; ``secret`` is hex text as carried in the kernel's environment."""
    return Session(key=secret.encode(), signature_scheme="hmac-sha256", username="rlm")


def _split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Routing frames before ``<IDS|MSG>``, and the signed message after it."""
    try:
        at = frames.index(DELIM)
    except ValueError:
        raise ValueError("no <IDS|MSG> delimiter") from None
    return frames[:at], frames[at + 1 :]


def _check_buffers(content: dict[str, Any], buffers: list[bytes]) -> bool:
    return bool(content.get("buffer_sha256", []) == buffer_digests(buffers))


class ControlServer:
    """Orchestrator side of the ipc transport: verifies each request with its agent's key
    and hands it to the :class:`~rlm.control.dispatch.Dispatcher` (shared with the kernel
    channel transport when given one; a handler gets a dispatcher of its own)."""

    def __init__(
        self,
        run_dir: Path,
        handler: Handler | Dispatcher,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.address = f"ipc://{run_dir / 'control'}"
        self.max_frame_bytes = max_frame_bytes
        self._owns_dispatcher = not isinstance(handler, Dispatcher)
        self.dispatcher = handler if isinstance(handler, Dispatcher) else Dispatcher(handler)
        self._sessions: dict[str, Session] = {}
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def rejected(self) -> int:
        """Messages refused so far (by this transport or the other sharing the dispatcher)."""
        return self.dispatcher.rejected

    def register(self, agent_id: str) -> str:
        """Give an agent its secret; only messages signed with it speak for that agent."""
        secret = secrets.token_hex(32)
        self._sessions[agent_id] = new_session(secret)
        return secret

    def unregister(self, agent_id: str) -> None:
        self._sessions.pop(agent_id, None)

    async def start(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes)
            sock.bind(self.address)
            os.chmod(self.address.removeprefix("ipc://"), 0o600)
        except (zmq.ZMQError, OSError) as exc:
            sock.close(linger=0)  # else terminating the context waits for it forever
            raise ConfigError(
                f"cannot create the control socket {self.address.removeprefix('ipc://')} "
                f"({exc}); is TMPDIR too long for a unix socket path?"
            ) from None
        self._sock = sock
        self._loop_task = asyncio.create_task(self._serve(), name="rlm-control")

    async def close(self) -> None:
        if self._owns_dispatcher:
            await self.dispatcher.close()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._ctx.term()

    async def _serve(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            try:
                self._receive(frames)
            except Exception:  # one bad message must never stop the channel
                log.exception("control channel: failed to process a message")

    def _receive(self, frames: list[bytes]) -> None:
        reject = self.dispatcher.reject
        try:
            idents, msg_list = _split(frames)
        except ValueError:
            reject("not a signed rlm message")
            return
        if len(idents) != 2:
            reject("missing agent id")
            return
        routing, agent_id = idents[0], idents[1].decode(errors="replace")
        session = self._sessions.get(agent_id)
        if session is None:
            reject(f"unknown agent {agent_id!r}")
            return
        try:
            msg = session.deserialize(msg_list, content=True)
        except Exception as exc:  # bad or missing signature, replay, garbage
            reject(f"agent {agent_id!r}: {exc}")
            return
        buffers = [bytes(b) for b in msg.get("buffers", [])]
        header = msg["header"]
        request = Request(agent_id, header["msg_type"], header["msg_id"], msg["content"], buffers)

        async def respond(reply_type: str, content: dict[str, Any], data: list[bytes]) -> None:
            if self._sock is None:
                return
            reply = session.msg(reply_type, content=content, parent=header)
            await self._sock.send_multipart([*session.serialize(reply, ident=[routing]), *data])

        self.dispatcher.receive(request, respond)


class ControlClient:
    """Kernel side: one signed request, one verified reply. Create inside the running loop."""

    def __init__(
        self, address: str, agent_id: str, secret: str, *, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self.address = address
        self.agent_id = agent_id
        self.session = new_session(secret)
        self.max_frame_bytes = max_frame_bytes

    async def request(
        self, msg_type: str, content: dict[str, Any], buffers: Sequence[bytes] = ()
    ) -> tuple[dict[str, Any], list[bytes]]:
        content = {**content, "buffer_sha256": buffer_digests(buffers)}
        msg = self.session.msg(msg_type, content=content)
        frames = self.session.serialize(msg, ident=[self.agent_id.encode()])
        largest = max(len(frame) for frame in [*frames, *buffers])
        if largest > self.max_frame_bytes:
            raise ConfigError(
                f"{msg_type}: a part of {largest:,} bytes is over the control channel's limit "
                f"of {self.max_frame_bytes:,} bytes; save large data to a file and pass its path"
            )
        ctx = zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        try:
            await sock.send_multipart([*frames, *buffers])
            while True:
                reply_frames = await sock.recv_multipart()
                _, msg_list = _split(reply_frames)
                reply = self.session.deserialize(msg_list, content=True)
                if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                    continue
                reply_buffers = [bytes(b) for b in reply.get("buffers", [])]
                if not _check_buffers(reply["content"], reply_buffers):
                    raise RuntimeError("control reply failed its buffer check")
                return reply["content"], reply_buffers
        except asyncio.CancelledError:
            cancel = self.session.msg(
                "cancel_request",
                content={"request_id": msg["header"]["msg_id"], "buffer_sha256": []},
            )
            sock.send_multipart(self.session.serialize(cancel, ident=[self.agent_id.encode()]))
            raise
        finally:
            sock.close(linger=100)
