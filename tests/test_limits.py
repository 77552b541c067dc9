"""Limits that end large trees early (1,000 children at depth 1 must fit).

* The open-files limit: a run raises its soft ``RLIMIT_NOFILE`` to the hard limit at start.
  Each kernel holds a few descriptors in the orchestrator, so the common soft limit of 1,024
  ends a tree near 300 kernels; the hard limit needs no privilege to reach. Checked on a real
  ``rlm`` process started with a low soft limit: its ``/proc/<pid>/limits`` is read while it
  waits on the (scripted) model.
* ZeroMQ's own limit of 1,023 sockets per context (five per kernel client: ~200 kernels).
* The zygote's listen backlog: a burst of children asks it to fork at once, and connections
  beyond the backlog are reset ("Connection lost"), which turned forking off for the run.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq

from helpers import model_env
from rlm.kernels.environment import kernel_environment
from rlm.kernels.fork_client import Zygote
from rlm.kernels.kernel import _zmq_context
from rlm.zygote import fork_supported
from scripted_model import ScriptedModel, reply

LOW = 256


def _expected(hard: int) -> int:
    if hard != resource.RLIM_INFINITY:
        return hard
    return int(Path("/proc/sys/fs/nr_open").read_text())


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def test_run_raises_soft_open_files_limit_to_hard(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOW:
        pytest.skip(f"hard open-files limit {hard} leaves nothing to raise")
    seen: list[int] = []
    pid: list[int] = []

    def first(body: dict[str, Any]) -> Any:
        seen.append(_soft_limit(pid[0]))
        return reply("done")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, hard))

    with ScriptedModel() as model:
        model.script(first)
        env = model_env(model.base_url, tmp_path / "home")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlm", "-q", "limits"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=low_limit,
        )
        pid.append(proc.pid)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert not model.errors, model.errors
    assert out.strip() == "done"
    assert seen == [_expected(hard)]


def test_kernel_clients_zmq_context_holds_sockets_for_a_thousand_kernels() -> None:
    assert _zmq_context().get(zmq.MAX_SOCKETS) >= 5 * 1000


#: More simultaneous fork requests than the old backlog of 256.
BURST = 400


@pytest.mark.skipif(not fork_supported(), reason="the zygote needs Linux")
async def test_zygote_answers_a_burst_of_simultaneous_requests(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    zygote = Zygote(run_dir, env=kernel_environment(), preload=[])
    await zygote.start()
    try:
        await zygote.ready()

        async def ask() -> dict[str, Any]:
            # A request the zygote refuses after reading it: the answer proves it was heard.
            reader, writer = await asyncio.open_unix_connection(zygote.path)
            try:
                writer.write(json.dumps({"argv": 0, "env": {}, "cwd": "/"}).encode() + b"\n")
                await writer.drain()
                return json.loads(await reader.readline())
            finally:
                writer.close()

        answers = await asyncio.gather(*[ask() for _ in range(BURST)], return_exceptions=True)
    finally:
        await zygote.close()
    failed = [a for a in answers if not isinstance(a, dict)]
    assert failed == [], f"{len(failed)} of {BURST} requests got no answer: {failed[:3]}"
    assert all(str(a.get("error", "")).startswith("bad request") for a in answers)
