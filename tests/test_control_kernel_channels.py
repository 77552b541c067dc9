"""The control path over the kernel's own channels (IOPub request, shell reply to a subshell).

Real kernels, the real orchestrator and the scripted model. The kernel channel is the default;
the ipc socket is the fallback (``RLM_CONTROL_TRANSPORT=ipc``, kernels without subshells,
parts over the IOPub size limit). To show which path a request took, the ipc socket is
removed before the run: a request sent to it would never be answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest

from conftest import read_log, sessions
from rlm.config import load_settings
from rlm.kernels.kernel import Kernel
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import ScriptedModel, ipython, reply, wait


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))


async def run_root(*, functions: tuple = (), drop_ipc: bool = True) -> str:
    """Run the scripted root agent; with ``drop_ipc`` the ipc control socket is gone first."""
    async with Orchestrator(load_settings(), functions=functions) as orchestrator:
        if drop_ipc:
            await orchestrator.kernel_side()  # the control server starts with the kernel side
            os.unlink(orchestrator.control.address.removeprefix("ipc://"))
        return await orchestrator.run("root task")


EVERY_KIND = """
import json
out = {"transport": type(rlm.inkernel._client()).__name__}
out["run"] = await rlm.run("child: count", inputs={"blob": b"x" * 3_000_000})
out["function"] = await record(5)
child = await rlm.spawn()
out["send"] = await child.send("counter one")
await child.close()
print(json.dumps(out))
await rlm.llm("chunk: last expression")
"""

# printed from the helper thread of a cell's asyncio.run, after the reply was taken: a
# thread without the cell's context sends under the kernel's global parent
BLOCKING = """
async def blocked():
    print(await rlm.llm("chunk: blocked thread"))
asyncio.run(blocked())
"""


@pytest.mark.parametrize("transport", ["auto", "ipc"])
async def test_every_request_kind_works_over_either_transport(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_CONTROL_TRANSPORT", transport)
    seen: list[int] = []

    def record(value: int) -> int:
        """Record ``value`` in the calling program."""
        seen.append(value)
        return len(seen)

    model.script(
        reply(None, ipython(EVERY_KIND, timeout=60)),
        reply(None, ipython(BLOCKING, timeout=30)),
        reply("root done"),
        match="root",
    )
    model.script(reply(None, ipython("print(len(blob))")), reply("child counted"), match="child:")
    model.script(reply("one"), match="counter")
    model.script(reply("from the last expression"), reply("from a blocked thread"), match="chunk:")
    answer = await run_root(functions=(record,), drop_ipc=transport == "auto")
    assert answer == "root done"
    first, blocked = tool_results(model.requests_for("root"))
    printed, result = first.strip().split("\n", 1)
    assert json.loads(printed) == {
        "transport": "KernelChannelClient" if transport == "auto" else "ControlClient",
        "run": "child counted",
        "function": 1,
        "send": "one",
    }
    # the cell's value is sent under the cell's parent even though a reply was taken on
    # the subshell meanwhile (else the orchestrator never sees it)
    assert result == "'from the last expression'"
    assert blocked.strip() == "from a blocked thread"  # a cell blocking its thread is answered
    assert seen == [5]
    assert tool_results(model.requests_for("child:")) == ["3000000"]  # inputs both ways


FORGERIES = """
import hashlib
from jupyter_client.session import Session
kernel = get_ipython().kernel
own = kernel.session
def frames(session, kind, body, buffers=()):
    body = {**body, "buffer_sha256": [hashlib.sha256(b).hexdigest() for b in buffers]}
    msg = session.msg("rlm_request", content={"type": kind, "body": body})
    return [*session.serialize(msg, ident=[b"rlm_request"]), *buffers]
send = kernel.iopub_socket.send_multipart
llm = {"prompt": "chunk: forged", "json_mode": False}
send(frames(Session(key=b"not-the-key", signature_scheme="hmac-sha256"), "llm_request", llm))
send(frames(Session(key=b""), "llm_request", llm))
genuine = frames(own, "inputs_request", {})
send(genuine)
send(genuine)
tampered = frames(own, "llm_request", llm)
tampered[-1] = tampered[-1].replace(b"forged", b"forgex")
send(tampered)
buffer = frames(own, "run_request", {"task": "child: x", "inputs": [{"name": "x"}]}, [b"abc"])
buffer[-1] = b"abd"
send(buffer)
send([b"garbage"])
send(own.serialize(own.msg("rlm_request", content={"body": {}}), ident=[b"rlm_request"]))
print(await rlm.llm("chunk: genuine"))
"""


async def test_forged_replayed_and_tampered_requests_on_iopub_are_refused(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(reply(None, ipython(FORGERIES, timeout=30)), reply("root done"), match="root")
    model.script(reply("genuine answer"), match="chunk: genuine")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "root done"
        # wrong key, unsigned, replayed, tampered content, tampered buffer, garbage, and a
        # signed request that names no request type
        assert orchestrator.dispatcher.rejected == 7
    assert tool_results(model.requests_for("root")) == ["genuine answer"]
    assert model.requests_for("chunk: forged") == [] and model.pending("chunk: forged") == 0
    assert children(sessions(rlm_env)[0]) == []  # the tampered run_request started nothing


async def test_the_output_cap_neither_counts_nor_cuts_control_messages(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_MAX_OUTPUT", "1000")  # the kernel's own cap: 1,000,000 characters
    flood = "print('x' * 1_200_000)\nanswer = await rlm.llm('chunk: ' + 'y' * 1_100_000)"
    model.script(
        reply(None, ipython(flood, timeout=60)),
        reply(None, ipython("print(answer)")),
        reply("root done"),
        match="root",
    )
    model.script(reply("answered in full"), match="chunk:")
    assert await run_root() == "root done"
    (request,) = model.requests_for("chunk:")
    assert len(request["messages"][-1]["content"]) == len("chunk: ") + 1_100_000
    assert tool_results(model.requests_for("root"))[-1] == "answered in full"
    capped = [line for line in read_log(sessions(rlm_env)[0]) if line.get("role") == "tool"]
    assert len(capped[0]["content"]) < 1_200_000  # while the print itself was capped


async def test_a_part_over_the_kernel_channel_limit_takes_the_ipc_socket(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_MAX_MESSAGE_BYTES", str(1024 * 1024))  # what IOPub may carry
    code = "print(await rlm.run('child: big', inputs={'blob': b'z' * 2_000_000}))"
    model.script(reply(None, ipython(code, timeout=60)), reply("root done"), match="root")
    model.script(reply(None, ipython("print(len(blob))")), reply("big ok"), match="child:")
    assert await run_root(drop_ipc=False) == "root done"
    assert tool_results(model.requests_for("root")) == ["big ok"]
    assert tool_results(model.requests_for("child:")) == ["2000000"]


async def _exited(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` (not necessarily our child: a forked kernel is the zygote's)
    exits within ``timeout`` seconds, woken by its pidfd rather than by polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        await asyncio.wait_for(gone, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


# requests over the kernel channel from an awaiting cell and from a cell blocking its thread
# (an inputs request: the one kind that needs no agent turn around the cell), and a child
# process that has exited and was never waited for (a zombie: what gateway_provisioners'
# launcher leaves of its listener, or a cell's forgotten Popen)
CONTROL_CELLS = [
    "print(await rlm.inkernel.load_inputs())",
    "print(asyncio.run(rlm.inkernel.load_inputs()))",
    "import os, subprocess\nleft = subprocess.Popen(['true'])\n"
    "os.waitid(os.P_PID, left.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped\nprint([])",
]


async def test_an_rlm_kernel_exits_on_a_plain_shutdown_request(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway (or any Jupyter client) stops a kernel with a ``shutdown_request`` and
    kills it only after a grace period (Kernel Gateway: 5 s): an rlm kernel must exit on the
    request itself, also after its cells used the control channel and left a zombie child
    (ipykernel signals every child, zombies too, for ~30 s before it exits)."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    async with Orchestrator(load_settings()) as orchestrator:
        agent = await orchestrator.new_root("root task")
        kernel = await orchestrator.start_kernel(agent)
        assert isinstance(kernel, Kernel) and kernel.subshell_id is not None
        try:
            for cell in CONTROL_CELLS:
                result = await kernel.execute(cell, timeout=30)
                assert result.output.strip() == "[]", result.output
            pid = kernel.pid
            assert pid is not None
            assert kernel._km is not None
            await kernel._km.request_shutdown()
            # Within a gateway's 5 s grace: a zombie held the kernel ~29 s, and ipykernel's
            # own shutdown race (rlm.inkernel.shutdown) held it until the kill, 1 run in 3.
            assert await _exited(pid, 4.0), "the kernel outlived its shutdown request"
        finally:
            await kernel.shutdown()


# Calls made together leave in one batch message and are answered in batches; one of them
# cancelled on its own (while the model holds it) is cancelled alone, the others answered.
ONE_CANCELLED = """
import json, pathlib, time
calls = [asyncio.ensure_future(rlm.llm(f"chunk: <{i}>")) for i in range(30)]
held = calls.pop(7)
answers = await asyncio.gather(*calls)
held.cancel()
try:
    await held
    outcome = "answered"
except asyncio.CancelledError:
    outcome = "cancelled"
log = next(pathlib.Path(HOME).glob("sessions/*/llm_calls.jsonl"))
deadline = time.monotonic() + 30
while time.monotonic() < deadline:  # the orchestrator logs the cancelled call as it ends
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    if len(lines) == 30:
        break
    time.sleep(0.05)
errors = sorted(str(x.get("error")) for x in lines)
print(json.dumps({"answers": answers, "held": outcome, "errors": errors}))
"""


async def test_one_call_of_a_batch_is_cancelled_alone(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    release = threading.Event()
    cell = f"HOME = {str(rlm_env)!r}\n" + ONE_CANCELLED
    model.script(reply(None, ipython(cell, timeout=60)), reply("root done"), match="root")
    for i in range(30):
        step = wait(release, timeout=60) if i == 7 else reply(f"answer {i}")
        model.script(step, match=f"<{i}>")
    try:
        assert await run_root() == "root done"
    finally:
        release.set()
    seen = json.loads(tool_results(model.requests_for("root"))[0])
    assert seen["answers"] == [f"answer {i}" for i in range(30) if i != 7]
    assert seen["held"] == "cancelled"
    assert seen["errors"] == ["None"] * 29 + ["cancelled"]
