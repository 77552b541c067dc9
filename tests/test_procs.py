"""The one /proc liveness check (sessions reader, forked kernels), against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from rlm.logs.procs import pid_alive, process_state


def wait_for_state(pid: int, state: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while process_state(pid) != state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling the state, not waiting for an outcome
    return True


def test_a_running_process_is_alive():
    assert pid_alive(os.getpid())
    assert process_state(os.getpid()) == "R"
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    ) as proc:
        assert pid_alive(proc.pid)
        proc.communicate(b"")


@pytest.mark.skipif(os.getuid() == 0, reason="root may signal every process")
def test_a_process_of_another_user_is_alive():
    assert pid_alive(1)  # init: kill(1, 0) is refused (EPERM), yet the process exists


def test_a_zombie_is_gone_and_so_is_a_reaped_process():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert wait_for_state(proc.pid, "Z"), process_state(proc.pid)
        assert not pid_alive(proc.pid)  # exited; only its parent (we) has not reaped it yet
    finally:
        proc.wait()
    assert process_state(proc.pid) is None
    assert not pid_alive(proc.pid)


@pytest.mark.parametrize("pid", [None, "123", 0, -1, True, 1.5])
def test_a_missing_or_malformed_pid_is_not_alive(pid):
    assert not pid_alive(pid)
