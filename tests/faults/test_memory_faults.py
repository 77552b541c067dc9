"""Memory faults: a kernel or a cell that tries to exhaust the orchestrator's memory.

The orchestrator owns every agent, log and budget of a run; whatever a cell does, it is the
kernel that must pay (or die), never the orchestrator.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import zmq
import zmq.utils.monitor
from faultkit import async_wait_until, check_logs, run_root, tool_results

from helpers import peak_rss_mib, reset_peak_rss
from rlm.control.channel import ControlClient, ControlServer, Request
from rlm.errors import ConfigError
from rlm.kernels.memory import DropCounter
from scripted_model import ipython, reply, wait

OOM_READ = "print(open('/proc/self/oom_score_adj').read().strip())"


# -- the OOM killer picks a kernel -----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "pool"), [("cold", 0), ("fork", 0), ("fork", 2)], ids=["cold", "forked", "pooled"]
)
async def test_kernels_are_the_oom_killers_first_choice(model, rlm_env, start, pool):
    """Every kernel (root and sub-agent; cold, forked and pooled) runs with an
    ``oom_score_adj`` 500 above the orchestrator's, so running out of memory kills a kernel."""
    own = int(Path("/proc/self/oom_score_adj").read_text())
    model.script(
        reply(None, ipython(OOM_READ + "\nprint(await rlm.run('child: report'))")),
        reply("root done"),
        match="root",
    )
    model.script(reply(None, ipython(OOM_READ)), reply("child done"), match="child:")
    answer = await run_root("root task", max_depth=1, kernel_start=start, kernel_pool=pool)
    assert answer == "root done"
    expected = str(min(own + 500, 1000))
    assert tool_results(model.requests_for("root")) == [f"{expected}\nchild done"]
    assert tool_results(model.requests_for("child:")) == [expected]
    assert int(Path("/proc/self/oom_score_adj").read_text()) == own
    check_logs(rlm_env)


# -- queued sub-agent requests and their buffers ---------------------------------------------

QUEUE = """
import asyncio, pathlib
data = {data}
tasks = [asyncio.ensure_future(rlm.run(f'child {{i}}: go', inputs=data)) for i in range(5)]
finished = set()
while sum(1 for t in finished if t.exception()) < {refused}:
    done, _ = await asyncio.wait(set(tasks) - finished, return_when=asyncio.FIRST_COMPLETED)
    finished |= done
pathlib.Path({mark!r}).write_text('refused')
for r in await asyncio.gather(*tasks, return_exceptions=True):
    print(f'{{type(r).__name__}}: {{r}}' if isinstance(r, Exception) else r)
"""


@pytest.mark.parametrize(
    ("limits", "data", "refused", "why"),
    [
        (
            {"max_pending_bytes": 20_000_000},
            "{'big': 'x' * 8_000_000}",
            2,
            "ConfigError: sub-agent refused: its inputs (8.0 MB) would take the inputs waiting "
            "for a slot to 24.0 MB, over RLM_MAX_PENDING_BYTES=20000000 (20.0 MB); start fewer "
            "sub-agents at once or pass smaller inputs",
        ),
        (
            {"max_pending_runs": 3},
            "None",
            1,
            "ConfigError: sub-agent refused: 3 sub-agents of this agent already wait for a slot "
            "(RLM_MAX_PENDING_RUNS=3); start fewer at once",
        ),
    ],
    ids=["bytes", "runs"],
)
async def test_queued_sub_agent_requests_are_bounded(
    model, rlm_env, tmp_path, limits, data, refused, why
):
    """Five sub-agents asked for at once with one slot: one runs, the others wait with their
    inputs in the orchestrator's memory, within RLM_MAX_PENDING_BYTES / RLM_MAX_PENDING_RUNS;
    the requests beyond are refused at once with a clear error in the cell."""
    mark = tmp_path / "refused"
    release = threading.Event()
    code = QUEUE.format(data=data, refused=refused, mark=str(mark))
    model.script(reply(None, ipython(code)), reply("root done"), match="root")
    model.script(
        wait(release, reply("child done")), *[reply("child done")] * (4 - refused), match="child"
    )
    run = asyncio.create_task(
        run_root("root task", max_depth=1, max_concurrency=1, exec_timeout=60, **limits)
    )
    # the first child holds its slot until every refusal has reached the cell
    assert await async_wait_until(lambda: mark.exists() or run.done(), 60)
    release.set()
    assert await run == "root done"
    (report,) = tool_results(model.requests_for("root"))
    lines = report.splitlines()
    assert sorted(lines) == sorted(["child done"] * (5 - refused) + [why] * refused), report
    check_logs(rlm_env)


# -- one oversized message from a kernel -----------------------------------------------------


#: A stream message built by hand below the kernel's output cap (which wraps
#: ``Session.send``): one 40 MB IOPub frame, signed and sent as the kernel would.
LIMIT = 8 * 1024 * 1024
HUGE_MESSAGE = """
_k = get_ipython().kernel
print('before', flush=True)
_m = _k.session.msg('stream', {'name': 'stdout', 'text': 'x' * 40_000_000}, parent=_k.get_parent())
_k.iopub_socket.send_multipart(_k.session.serialize(_m, ident=[b'stream.stdout']))
del _k, _m
"""


async def test_an_oversized_iopub_message_is_dropped_before_decoding(model, rlm_env):
    """A cell that sends one 40 MB IOPub message by hand (under the kernel's output cap) costs
    the orchestrator no memory: ZeroMQ drops the frame unread (``MAXMSGSIZE``, set by
    RLM_MAX_MESSAGE_BYTES), the model is told its output was dropped, and the kernel's next
    cell is seen whole (a new IOPub connection replaced the one ZeroMQ closed)."""
    marks: dict[str, float] = {}

    def flood(body: dict):  # served right before the cell runs: measure only the message
        reset_peak_rss()
        marks["before"] = peak_rss_mib()
        return reply(None, ipython(HUGE_MESSAGE))

    model.script(
        reply(None, ipython("1")), flood, reply(None, ipython("print('still here')")), reply("ok")
    )
    assert await run_root("flood", max_output=2000, max_message_bytes=LIMIT) == "ok"
    growth = peak_rss_mib() - marks["before"]
    assert growth < 30, f"the orchestrator's peak RSS grew by {growth:.0f} MB"
    _, dropped, after = tool_results(model.requests)
    assert "x" * 100 not in dropped, dropped[:200]
    note = f"[output dropped: a message over {LIMIT:,} bytes]"
    assert dropped.startswith("before\n") and dropped.endswith(note), dropped
    assert after == "still here"
    check_logs(rlm_env)


def test_iopub_connections_replaced_in_a_row_each_get_their_own_drop_monitor():
    """Every kernel restart and every dropped message replaces the IOPub connection and its
    drop monitor; libzmq frees a closed monitor's inproc address only later, on its own
    thread, so the next monitor must not take the same address (it failed to start with
    "Address already in use", and so did the restart)."""
    context = zmq.Context()
    try:
        for _ in range(50):
            socket = context.socket(zmq.SUB)
            try:
                counter = DropCounter(socket)
                counter.close()
            finally:
                socket.close(linger=0)
            del counter
    finally:
        context.term()


# -- the control channel ---------------------------------------------------------------------


async def test_an_oversized_control_frame_is_dropped_unread(tmp_path):
    """A kernel sending a control frame over the limit (a client that skips its own check)
    is disconnected by ZeroMQ before the frame is read; the channel serves the next request.
    A well-behaved client refuses to send it, with one clear line."""
    limit = 1 << 20
    seen: list[dict] = []

    async def handler(req: Request) -> tuple[dict, list[bytes]]:
        seen.append(req.content)
        return {"inputs": []}, []

    server = ControlServer(tmp_path, handler, max_frame_bytes=limit)
    await server.start()
    assert server._sock is not None
    disconnects = server._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        secret = server.register("a")
        careless = ControlClient(server.address, "a", secret, max_frame_bytes=1 << 30)
        big = asyncio.create_task(
            careless.request("inputs_request", {"n": 1}, [b"x" * (8 * limit)])
        )
        event = zmq.utils.monitor.parse_monitor_message(
            await asyncio.wait_for(disconnects.recv_multipart(), 30)
        )
        assert event["event"] == zmq.EVENT_DISCONNECTED
        big.cancel()
        careful = ControlClient(server.address, "a", secret, max_frame_bytes=limit)
        with pytest.raises(ConfigError, match=r"a part of 8,388,608 bytes is over the control"):
            await careful.request("inputs_request", {"n": 2}, [b"x" * (8 * limit)])
        content, buffers = await careful.request("inputs_request", {"n": 3})
        assert content["inputs"] == [] and buffers == []
        assert [content["n"] for content in seen] == [3]
    finally:
        server._sock.disable_monitor()
        disconnects.close(linger=0)
        await server.close()
