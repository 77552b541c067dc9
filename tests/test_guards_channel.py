"""The kernel side of the control channel trusts only its own orchestrator's replies.

A real ``ControlClient`` talks to a stand-in orchestrator: a ZeroMQ ROUTER bound on ipc that
answers each request with a chosen sequence of replies. Only a reply signed with the agent's
secret *and* answering this very request may come back from ``request``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from rlm.control.channel import ControlClient, buffer_digests, new_session

SECRET = "ab" * 32
#: Replies to one request: given the request's header, the messages to send back, in order.
Answer = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _reply(session: Session, parent: dict[str, Any], who: str) -> dict[str, Any]:
    content = {"status": "ok", "answer": who, "buffer_sha256": buffer_digests([])}
    return session.msg("run_reply", content=content, parent=parent)


@contextlib.asynccontextmanager
async def fake_orchestrator(tmp_path: Path, answer: Answer, signer: Session) -> AsyncIterator[str]:
    """A ROUTER on ``ipc://tmp_path/control`` answering each request with ``answer``'s
    messages, each signed by ``signer`` unless the message says otherwise."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    address = f"ipc://{tmp_path / 'control'}"
    sock.bind(address)
    reader = Session(key=b"")  # reads any request: the client's signing is not under test

    async def serve() -> None:
        while True:
            frames = await sock.recv_multipart()
            at = frames.index(b"<IDS|MSG>")
            request = reader.deserialize(frames[at + 1 :], content=True)
            for message in answer(request["header"]):
                session = message.pop("_signer", signer)
                await sock.send_multipart(session.serialize(message, ident=[frames[0]]))

    task = asyncio.create_task(serve())
    try:
        yield address
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close(linger=0)


async def outcome(address: str) -> str:
    """What one ``run_request`` of a real kernel-side client comes back with."""
    client = ControlClient(address, "agent-a", SECRET)
    try:
        content, _ = await asyncio.wait_for(client.request("run_request", {"task": "t"}), 10)
    except asyncio.TimeoutError:
        return "no reply taken"
    except Exception as exc:  # refused: the kernel side raised instead of taking it
        return f"refused ({type(exc).__name__})"
    return str(content["answer"])


async def test_a_genuine_reply_is_taken(tmp_path: Path) -> None:
    genuine = new_session(SECRET)
    async with fake_orchestrator(
        tmp_path, lambda parent: [_reply(genuine, parent, "genuine")], genuine
    ) as address:
        assert await outcome(address) == "genuine"


@pytest.mark.parametrize(
    "forger",
    [
        pytest.param(lambda: new_session("cd" * 32), id="wrong-key"),
        pytest.param(lambda: Session(key=b"", username="rlm"), id="unsigned"),
    ],
)
async def test_a_reply_not_signed_with_the_agent_secret_is_never_taken(
    tmp_path: Path, forger: Callable[[], Session]
) -> None:
    """A stand-in orchestrator (anyone who could bind the address) answers first with a
    forged reply, then with the genuine one: the forged answer must never reach the cell."""
    genuine, forged = new_session(SECRET), forger()

    def answer(parent: dict[str, Any]) -> list[dict[str, Any]]:
        fake = {**_reply(forged, parent, "forged"), "_signer": forged}
        return [fake, _reply(genuine, parent, "genuine")]

    async with fake_orchestrator(tmp_path, answer, genuine) as address:
        result = await outcome(address)
    assert result != "forged"
    assert result == "genuine" or result.startswith("refused"), result


async def test_a_signed_reply_to_another_request_is_not_taken(tmp_path: Path) -> None:
    """A validly signed reply whose parent is some other request (a stale reply of an earlier
    call, say) is skipped; the reply to this request is the one returned."""
    genuine = new_session(SECRET)

    def answer(parent: dict[str, Any]) -> list[dict[str, Any]]:
        other = genuine.msg("run_request", content={"task": "another"})["header"]
        return [_reply(genuine, other, "another request's"), _reply(genuine, parent, "genuine")]

    async with fake_orchestrator(tmp_path, answer, genuine) as address:
        assert await outcome(address) == "genuine"
