"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path


def model_env(base_url: str, home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an ``rlm`` process that talks to the scripted model at
    ``base_url``: ``base`` (default ``os.environ``) without its ``RLM_*`` variables, plus the
    four a run needs, its sessions under ``home``."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("RLM_")}
    env.update(
        RLM_BASE_URL=base_url, RLM_API_KEY="sk-test", RLM_MODEL="scripted", RLM_HOME=str(home)
    )
    return env


def kernel_pids(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (e.g. an orchestrator's run dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def run_cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``python -m rlm ARGS`` in the current environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        **kwargs,
    )


@dataclass
class NeverReturning:
    """Two host functions for cancellation tests: ``forever`` never returns on its own;
    ``was_cancelled`` waits (up to 30 s) until the host saw ``forever`` cancelled."""

    forever: Callable[[], Awaitable[None]]
    was_cancelled: Callable[[], Awaitable[bool]]
    #: Set once ``forever`` has been called.
    started: asyncio.Event


def never_returning() -> NeverReturning:
    """A fresh ``forever``/``was_cancelled`` pair (host functions take their kernel names
    from ``__name__``, hence closures rather than methods)."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        """Never returns on its own."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def was_cancelled() -> bool:
        """Whether the host saw ``forever`` cancelled (waits for it, up to 30 s)."""
        await asyncio.wait_for(cancelled.wait(), 30)
        return True

    return NeverReturning(forever, was_cancelled, started)


def peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset the peak to the current resident set size (Linux >= 4.0: ``clear_refs`` "5").
    Where it cannot, a growth measured from the peak is a lower bound of the truth."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def read_llm_calls_code(home: Path | str, count: int) -> str:
    """Cell code that reads the session's ``llm_calls.jsonl`` under ``home`` into
    ``lines`` (parsed), waiting up to 30 s for ``count`` lines: the orchestrator logs a
    cancelled call when its cancel lands, after the cell that cancelled it has moved on."""
    return f"""
import json, pathlib, time
log = pathlib.Path({str(home)!r})
lines = []
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    files = list(log.glob('sessions/*/llm_calls.jsonl'))
    lines = [json.loads(x) for x in files[0].read_text().splitlines()] if files else []
    if len(lines) == {count}:
        break
    time.sleep(0.05)
"""
