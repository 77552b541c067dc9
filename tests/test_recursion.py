"""Sub-agents started from inside a kernel cell, over the signed control channel."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

import rlm
from conftest import read_log, read_meta, sessions
from helpers import kernel_pids
from rlm.config import load_settings
from rlm.control.channel import ControlServer, buffer_digests, new_session
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import ipython, reply, wait


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))


async def test_depth_zero_refuses_at_once_and_prompt_is_silent(model, rlm_env):
    code = "try:\n    await rlm.run('child')\nexcept rlm.DepthLimitError as e:\n    print('refused:', e)"
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    await rlm.run("root task")
    (result,) = tool_results(model.requests)
    assert result.startswith("refused:") and "RLM_MAX_DEPTH is 0" in result
    assert len(model.requests) == 2  # no model call for the refused child
    assert "rlm.run" not in model.requests[0]["messages"][0]["content"]
    assert children(sessions(rlm_env)[0]) == []


async def test_child_answer_reaches_the_parent_cell(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(
        reply(None, ipython("answer = await rlm.run('child: say hi')\nprint(answer.upper())")),
        reply("parent done"),
        match="root",
    )
    model.script(reply("hi from child", usage=(3, 4)), match="child:")
    assert await rlm.run("root task", max_turns=5) == "parent done"
    assert tool_results(model.requests_for("root")) == ["HI FROM CHILD"]
    assert "rlm.run" in model.requests_for("root")[0]["messages"][0]["content"]
    # the child's prompt does not offer recursion beyond the limit
    assert "rlm.run" not in model.requests_for("child:")[0]["messages"][0]["content"]
    (root,) = sessions(rlm_env)
    (child,) = children(root)
    meta, child_meta = read_meta(root), read_meta(child)
    assert child_meta["parent"] == meta["id"] and child_meta["depth"] == 1
    assert child_meta["task"] == "child: say hi" and child_meta["status"] == "done"
    assert meta["children"] == [{"id": child.name, "task": "child: say hi", "status": "done"}]
    own, total = meta["usage"], meta["usage_total"]
    assert total["prompt_tokens"] == own["prompt_tokens"] + 3
    assert total["completion_tokens"] == own["completion_tokens"] + 4
    assert (
        child_meta["usage_total"]
        == child_meta["usage"]
        == {
            "prompt_tokens": 3,
            "completion_tokens": 4,
        }
    )


async def test_grandchild_at_depth_two(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    model.script(
        reply(None, ipython("print(await rlm.run('child: ask below'))")),
        reply("root ok"),
        match="root",
    )
    model.script(
        reply(None, ipython("print(await rlm.run('grandchild: leaf'))")),
        reply("child relays"),
        match="child:",
    )
    code = (
        "try:\n    await rlm.run('too deep')\nexcept rlm.DepthLimitError:\n    print('depth limit')"
    )
    model.script(reply(None, ipython(code)), reply("leaf answer"), match="grandchild:")
    assert await rlm.run("root task") == "root ok"
    assert tool_results(model.requests_for("grandchild:")) == ["depth limit"]
    assert tool_results(model.requests_for("child:")) == ["leaf answer"]
    assert tool_results(model.requests_for("root")) == ["child relays"]
    (root,) = sessions(rlm_env)
    logs = list(root.glob("sub-*/sub-*/messages.jsonl"))
    assert len(logs) == 1
    grandchild = logs[0].parent
    assert read_meta(grandchild)["depth"] == 2
    assert read_meta(grandchild)["parent"] == f"{root.name}/{grandchild.parent.name}"


async def test_gathered_children_overlap_in_time(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    barrier = threading.Barrier(4, timeout=60)

    def after_all_arrive(body: dict):
        barrier.wait()  # every child has sent its first request before any gets a reply
        return reply("child " + body["messages"][1]["content"][-1])

    code = (
        "import asyncio\n"
        "rs = await asyncio.gather(*(rlm.run(f'child {i}') for i in range(4)))\n"
        "print(sorted(rs))"
    )
    model.script(reply(None, ipython(code)), reply("all done"), match="root")
    model.script(*[after_all_arrive] * 4, match="child")
    assert await rlm.run("root task") == "all done"
    assert tool_results(model.requests_for("root")) == [
        "['child 0', 'child 1', 'child 2', 'child 3']"
    ]
    spans = []
    for child in children(sessions(rlm_env)[0]):
        log = read_log(child)
        asked = next(line["timestamp"] for line in log if line.get("role") == "user")
        answered = next(line["timestamp"] for line in log if line.get("role") == "assistant")
        spans.append((asked, answered))
    assert len(spans) == 4
    # all four were waiting on the model at the same moment
    assert max(start for start, _ in spans) < min(end for _, end in spans)


async def test_asyncio_run_form_works_in_a_cell(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    code = (
        "import asyncio\n"
        "result = asyncio.run(rlm.run('child: one'))\n"
        "async def main():\n"
        "    return await asyncio.gather(rlm.run('child: two'), rlm.run('child: three'))\n"
        "print(result, sorted(asyncio.run(main())))"
    )
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    model.script(reply("1"), match="child: one")
    model.script(reply("2"), match="child: two")
    model.script(reply("3"), match="child: three")
    await rlm.run("root task")
    assert tool_results(model.requests_for("root")) == ["1 ['2', '3']"]


async def test_inputs_become_variables_not_prompt_text(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    secret_text = "UNIQUE-PAYLOAD-" + "x" * 5000
    code = (
        f"big = {secret_text!r}\n"
        "rows = [{'a': 1}, {'a': 2}]\n"
        "print(await rlm.run('child: inspect', inputs={'log_text': big, 'rows': rows}))"
    )
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    model.script(
        reply(None, ipython("print(type(log_text).__name__, len(log_text), rows[1]['a'])")),
        reply("inspected"),
        match="child: inspect",
    )
    await rlm.run("root task")
    child_requests = model.requests_for("child: inspect")
    assert tool_results(child_requests) == ["str 5015 2"]
    system = child_requests[0]["messages"][0]["content"]
    assert "`log_text`: str, 5,015 characters" in system
    assert "`rows`: list, 2 items" in system
    assert all("UNIQUE-PAYLOAD" not in str(m["content"]) for m in child_requests[-1]["messages"])


async def test_failed_child_raises_agent_error_in_the_cell(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    code = (
        "try:\n"
        "    await rlm.run('child: doomed', max_turns=1)\n"
        "except rlm.AgentError as e:\n"
        "    print('failed:', e.reason, e.session_path)"
    )
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    model.script(reply(None, ipython("1")), match="child: doomed")
    await rlm.run("root task")
    (result,) = tool_results(model.requests_for("root"))
    (child,) = children(sessions(rlm_env)[0])
    assert result == f"failed: max_turns {child}"
    assert read_meta(child)["status"] == "error"
    assert read_meta(sessions(rlm_env)[0])["children"][0]["status"] == "error"


async def test_interrupted_cell_cancels_its_children(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    release = threading.Event()
    code = "import asyncio\nawait asyncio.gather(rlm.run('child: a'), rlm.run('child: b'))"
    model.script(reply(None, ipython(code, timeout=3)), reply("gave up"), match="root")
    model.script(reply(None, ipython("print(await rlm.run('grandchild: slow'))")), match="child: a")
    model.script(wait(release), match="child: b")
    model.script(wait(release), match="grandchild: slow")
    try:
        async with Orchestrator(load_settings()) as orchestrator:
            marker = str(orchestrator.run_dir)
            assert await orchestrator.run("root task") == "gave up"
            assert kernel_pids(marker) == []
    finally:
        release.set()
    (result,) = tool_results(model.requests_for("root"))
    assert "timed out after 3 s" in result
    root = sessions(rlm_env)[0]
    metas = [read_meta(p.parent) for p in root.glob("sub-*/**/meta.json")]
    assert sorted(m["task"] for m in metas) == ["child: a", "child: b", "grandchild: slow"]
    assert {m["status"] for m in metas} == {"cancelled"}


async def test_control_channel_rejects_forged_unsigned_and_replayed(tmp_path):
    handled: list[str] = []

    async def handler(req):
        handled.append(f"{req.agent_id}:{req.content['n']}")
        return {"status": "ok"}, []

    server = ControlServer(tmp_path, handler)
    secret_a = server.register("agent-a")
    server.register("agent-b")
    await server.start()
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.connect(server.address)
    try:

        def frames(session: Session, claimed: str, n: int) -> list[bytes]:
            msg = session.msg(
                "inputs_request", content={"n": n, "buffer_sha256": buffer_digests([])}
            )
            return session.serialize(msg, ident=[claimed.encode()])

        good = frames(new_session(secret_a), "agent-a", 1)
        await sock.send_multipart(good)
        reply_frames = await asyncio.wait_for(sock.recv_multipart(), 10)
        assert b"inputs_reply" in b"".join(reply_frames)

        unsigned = Session(key=b"", username="rlm")
        await sock.send_multipart(frames(unsigned, "agent-a", 2))  # no signature
        await sock.send_multipart(frames(new_session("00" * 32), "agent-a", 3))  # wrong key
        await sock.send_multipart(frames(new_session(secret_a), "agent-b", 4))  # forged id
        await sock.send_multipart(good)  # replay
        await sock.send_multipart([b"garbage"])
        await sock.send_multipart(frames(new_session(secret_a), "agent-a", 5))  # still works
        await asyncio.wait_for(sock.recv_multipart(), 10)
        assert handled == ["agent-a:1", "agent-a:5"]
        assert server.rejected == 5
    finally:
        sock.close(linger=0)
        await server.close()


async def test_child_settings_are_inherited_and_overridable(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    code = "print(await rlm.run('child: custom', model='other-model', tools=['ipython']))"
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    model.script(reply("custom ok"), match="child: custom")
    await rlm.run("root task")
    (request,) = model.requests_for("child: custom")
    assert request["model"] == "other-model"
    assert [t["function"]["name"] for t in request["tools"]] == ["ipython"]
    (child,) = children(sessions(rlm_env)[0])
    assert read_meta(child)["settings"]["max_depth"] == 1


@pytest.mark.parametrize("bad", ["tools=['nope']", "max_turns=0"])
async def test_bad_child_settings_raise_config_error(model, rlm_env, monkeypatch, bad):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    code = f"try:\n    await rlm.run('child', {bad})\nexcept rlm.ConfigError as e:\n    print('config:', e)"
    model.script(reply(None, ipython(code)), reply("ok"), match="root")
    await rlm.run("root task")
    (result,) = tool_results(model.requests_for("root"))
    assert result.startswith("config:")


@pytest.mark.parametrize("size", [10, 2 << 20], ids=["small", "hashed-off-the-loop"])
async def test_control_channel_rejects_a_buffer_that_does_not_match_its_digest(tmp_path, size):
    handled: list[int] = []

    async def handler(req):
        handled.append(req.content["n"])
        return {"status": "ok"}, []

    server = ControlServer(tmp_path, handler)
    secret = server.register("agent-a")
    await server.start()
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.connect(server.address)
    session = new_session(secret)
    try:

        def frames(n: int, sent: bytes, digested: bytes) -> list[bytes]:
            content = {"n": n, "buffer_sha256": buffer_digests([digested])}
            msg = session.msg("inputs_request", content=content)
            return [*session.serialize(msg, ident=[b"agent-a"]), sent]

        blob = b"x" * size
        await sock.send_multipart(frames(1, blob[:-1] + b"y", blob))  # tampered buffer
        await sock.send_multipart(frames(2, blob, blob))
        await asyncio.wait_for(sock.recv_multipart(), 10)
        assert handled == [2]
        assert server.rejected == 1
    finally:
        sock.close(linger=0)
        await server.close()
