"""The control channel between agent kernels and the orchestrator.

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
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import DELIM, Session

from rlm.errors import ConfigError, RLMError

__all__ = ["ControlClient", "ControlServer", "Request", "buffer_digests", "new_session"]

log = logging.getLogger("rlm.control.channel")

#: Largest message part either side accepts. A larger frame reaching the orchestrator is
#: dropped by ZeroMQ from its size header, unread (``MAXMSGSIZE``), and its connection closed;
#: the kernel side refuses to send one, so a cell gets a clear error instead of no reply.
MAX_FRAME_BYTES = 1024 * 1024 * 1024

#: Rejected messages are summarised: the first is logged with its reason, then at most one
#: line per this many seconds counts the rest (a flooding kernel must not flood stderr).
REJECT_REPORT_INTERVAL = 10.0


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


def buffer_digests(buffers: Sequence[bytes]) -> list[str]:
    return [hashlib.sha256(bytes(buf)).hexdigest() for buf in buffers]


#: Buffers larger than this (in all) are hashed in a worker thread, not on the event loop
#: every agent of the run shares (SHA-256 runs at ~1 GB/s: a 300 MB input would stall it).
HASH_ON_LOOP_BYTES = 1 << 20


def _check_buffers(content: dict[str, Any], buffers: list[bytes]) -> bool:
    return bool(content.get("buffer_sha256", []) == buffer_digests(buffers))


@dataclass
class Request:
    """A verified request, as the orchestrator's handler receives it."""

    agent_id: str
    msg_type: str
    msg_id: str
    content: dict[str, Any]
    buffers: list[bytes]


Handler = Callable[[Request], Awaitable[tuple[dict[str, Any], list[bytes]] | None]]


class ControlServer:
    """Orchestrator side: verifies each request with its agent's key and dispatches it."""

    def __init__(
        self, run_dir: Path, handler: Handler, *, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self.address = f"ipc://{run_dir / 'control'}"
        self.max_frame_bytes = max_frame_bytes
        self._handler = handler
        self._sessions: dict[str, Session] = {}
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._checks: set[asyncio.Task[None]] = set()
        self.rejected = 0
        self._rejects_reported = 0
        self._last_reject_report = 0.0

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
        self._report_rejects()
        tasks = [
            *self._tasks.values(),
            *self._checks,
            *([self._loop_task] if self._loop_task else []),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
        self._ctx.term()

    def _reject(self, why: str) -> None:
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

    async def _serve(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            try:
                self._receive(frames)
            except Exception:  # one bad message must never stop the channel
                log.exception("control channel: failed to process a message")

    def _receive(self, frames: list[bytes]) -> None:
        try:
            idents, msg_list = _split(frames)
        except ValueError:
            self._reject("not a signed rlm message")
            return
        if len(idents) != 2:
            self._reject("missing agent id")
            return
        routing, agent_id = idents[0], idents[1].decode(errors="replace")
        session = self._sessions.get(agent_id)
        if session is None:
            self._reject(f"unknown agent {agent_id!r}")
            return
        try:
            msg = session.deserialize(msg_list, content=True)
        except Exception as exc:  # bad or missing signature, replay, garbage
            self._reject(f"agent {agent_id!r}: {exc}")
            return
        buffers = [bytes(b) for b in msg.get("buffers", [])]
        if sum(map(len, buffers)) > HASH_ON_LOOP_BYTES:
            # hashing hundreds of MB would stall every agent of the run: off the loop
            check = asyncio.create_task(
                self._verify_off_loop(session, routing, msg, agent_id, buffers)
            )
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)
            return
        if not _check_buffers(msg["content"], buffers):
            self._reject(f"agent {agent_id!r}: buffer digest mismatch")
            return
        self._accept(session, routing, msg, agent_id, buffers)

    async def _verify_off_loop(
        self,
        session: Session,
        routing: bytes,
        msg: dict[str, Any],
        agent_id: str,
        buffers: list[bytes],
    ) -> None:
        digests = await asyncio.to_thread(buffer_digests, buffers)
        if msg["content"].get("buffer_sha256", []) != digests:
            self._reject(f"agent {agent_id!r}: buffer digest mismatch")
            return
        self._accept(session, routing, msg, agent_id, buffers)

    def _accept(
        self,
        session: Session,
        routing: bytes,
        msg: dict[str, Any],
        agent_id: str,
        buffers: list[bytes],
    ) -> None:
        """A verified message: cancel what it names, or handle it in a task of its own."""
        request = Request(
            agent_id, msg["header"]["msg_type"], msg["header"]["msg_id"], msg["content"], buffers
        )
        if request.msg_type == "cancel_request":
            from rlm.schema.control import CancelRequest  # orchestrator side only (pydantic)

            try:
                cancel: CancelRequest = CancelRequest.parse(request.content, "cancel_request")
            except RLMError as exc:
                self._reject(f"agent {agent_id!r}: {exc}")
                return
            task = self._tasks.get((agent_id, cancel.request_id))
            if task is not None:
                task.cancel()
            return
        key = (agent_id, request.msg_id)
        task = asyncio.create_task(self._dispatch(session, routing, msg, request))
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _dispatch(
        self, session: Session, routing: bytes, msg: dict[str, Any], req: Request
    ) -> None:
        from rlm.schema.control import encode_error  # orchestrator side only (pydantic)

        try:
            result = await self._handler(req)
        except asyncio.CancelledError as exc:
            result = (encode_error(exc), [])
        except Exception as exc:
            log.exception("control handler failed")
            result = (encode_error(exc), [])
        if result is None or self._sock is None:
            return
        content, buffers = result
        reply_type = req.msg_type.replace("_request", "_reply")
        if sum(map(len, buffers)) > HASH_ON_LOOP_BYTES:
            digests = await asyncio.to_thread(buffer_digests, buffers)
        else:
            digests = buffer_digests(buffers)
        content = {**content, "buffer_sha256": digests}
        reply = session.msg(reply_type, content=content, parent=msg["header"])
        frames = session.serialize(reply, ident=[routing])
        await self._sock.send_multipart([*frames, *buffers])


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
