"""An agent's first model request overlaps its kernel's start instead of waiting for it.

The kernel is held at interpreter start-up by a ``sitecustomize`` gate (a file it waits for);
only the model's first request opens it. If rlm waited for the kernel before asking the
model, the gate would never open and the kernel would give up (which these tests notice).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import rlm
from rlm.logs.procs import pid_alive
from scripted_model import ipython, reply

GATE = """
import os, sys, time
gate = os.environ.get("RLM_TEST_KERNEL_GATE")
if gate and "ipykernel_launcher" in (sys.orig_argv if hasattr(sys, "orig_argv") else []):
    open(gate + ".pid", "w").write(str(os.getpid()))
    deadline = time.monotonic() + 15
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            open(gate + ".timed-out", "w").close()
            sys.exit(1)
        time.sleep(0.01)
"""


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Kernels started from now on wait at start-up until the returned path exists."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GATE)
    path = tmp_path / "gate"
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("RLM_TEST_KERNEL_GATE", str(path))
    return path


def _wait_for(path: Path, timeout: float = 30) -> None:
    """Block the model's reply until the kernel reached its gate (the server is a thread)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    return pid_alive(pid)


async def test_first_request_is_sent_while_the_kernel_still_starts(model, rlm_env, gate):
    def first(body: dict) -> dict:
        _wait_for(Path(f"{gate}.pid"))  # the kernel is held at its gate, not yet started
        gate.write_text("open")  # only now may the kernel finish starting
        return reply(None, ipython("print(6 * 7)"))

    model.script(first, reply("forty-two"))
    assert await rlm.run("compute") == "forty-two"
    assert "42" in model.requests[-1]["messages"][-1]["content"]  # the cell ran in the kernel
    assert not Path(f"{gate}.timed-out").exists()


async def test_an_answer_before_any_tool_call_cancels_the_kernel_start(model, rlm_env, gate):
    def answer(body: dict) -> dict:
        _wait_for(Path(f"{gate}.pid"))  # the kernel is held at its gate, not yet started
        return reply("no tools needed")

    model.script(answer)
    assert await rlm.run("just answer") == "no tools needed"
    pid = int(Path(f"{gate}.pid").read_text())
    try:
        assert not _alive(pid), "the half-started kernel was left running"
        assert not Path(f"{gate}.timed-out").exists()  # it was stopped, it did not give up
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
