"""What every fault case checks: logs that parse and lose nothing, processes that are gone.

Imported by the fault modules as ``from faultkit import ...`` (pytest puts this folder on
``sys.path`` for the test modules in it, and ``tests/`` for the shared ``conftest``/``helpers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.agent.context import fill_empty_reply, sanitize_tool_calls
from rlm.config import load_settings
from rlm.logs.procs import pid_alive
from rlm.runtime.orchestrator import Orchestrator

#: The API key ``rlm_env`` puts in the environment (tests/conftest.py).
API_KEY = "sk-test-secret-key"


def tool_results(requests: list[dict[str, Any]]) -> list[str]:
    """Tool messages of the last request, in order: what the model saw of its calls."""
    if not requests:
        return []
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def user_messages(requests: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "user"]


async def run_root(task: str, events: list[Any] | None = None, **settings: Any) -> str:
    """A root agent on an in-process orchestrator (so the test can watch and measure it);
    ``events`` collects what the orchestrator reports, ``settings`` are its settings.

    ipykernel stops capturing fd-level output (``os.write(1, ...)``, C extensions,
    subprocesses) when PYTEST_CURRENT_TEST is in its environment; kernels here must behave as
    in production. pytest sets it again for the next phase."""
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    on_event = events.append if events is not None else None
    async with Orchestrator(load_settings(**settings), on_event=on_event) as orchestrator:
        return await orchestrator.run(task)


# -- logs ------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a ``messages.jsonl``, strictly: UTF-8, one JSON object per line, the
    last line terminated, each a message (``role``) or an event (``event``) with a timestamp."""
    data = path.read_bytes()
    text = data.decode("utf-8")  # raises on invalid UTF-8
    assert not text or text.endswith("\n"), f"{path}: last line is not terminated"
    records = []
    # split on "\n" only: str.splitlines would also cut at U+2028 inside a JSON string
    for number, line in enumerate(text.split("\n")[:-1], 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{path}:{number}: corrupt line ({exc}): {line[:200]!r}") from None
        assert isinstance(record, dict), f"{path}:{number}: not an object"
        assert "role" in record or "event" in record, f"{path}:{number}: {line[:200]}"
        assert "timestamp" in record, f"{path}:{number}: no timestamp"
        records.append(record)
    return records


def session_folders(home: Path) -> list[Path]:
    """Every session folder (roots and sub-agents) under ``home``."""
    root = home / "sessions"
    return sorted(p.parent for p in root.rglob("meta.json")) if root.exists() else []


def check_logs(home: Path) -> int:
    """Validate every ``messages.jsonl`` and ``meta.json`` of the tree; count the lines.

    Also asserts no session was left ``running`` and no temp meta file was left behind."""
    folders = session_folders(home)
    assert folders, f"no session under {home}"
    lines = 0
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        assert meta["status"] in ("done", "error", "cancelled"), (folder, meta["status"])
        assert not list(folder.glob(".meta-*")), f"{folder}: leftover temp meta file"
        lines += len(read_jsonl(folder / "messages.jsonl"))
    return lines


#: Fields a log line adds to a chat message (docs/sessions.md); the model never sees them.
LOG_ONLY = (
    "timestamp",
    "usage",
    "kind",
    "finish_reason",
    "served_model",
    "response_id",
    "notes",
    "outputs",
    "text_tool_calls",
)


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    # the log keeps a tool call's raw arguments; the model is sent "{}" for broken ones,
    # and placeholder text for an empty reply
    message = fill_empty_reply(sanitize_tool_calls(message))
    out = {k: v for k, v in message.items() if k not in LOG_ONLY}
    return {k: v for k, v in out.items() if v is not None or k == "content"}


def assert_nothing_lost(folder: Path, requests: list[dict[str, Any]], answer: str | None) -> None:
    """The log holds exactly the conversation the model was last sent, plus its final reply."""
    log = [r for r in read_jsonl(folder / "messages.jsonl") if "role" in r]
    sent = requests[-1]["messages"]
    assert [_comparable(m) for m in log[: len(sent)]] == [_comparable(m) for m in sent]
    if answer is not None:
        assert len(log) == len(sent) + 1, [m["role"] for m in log]
        assert log[-1]["role"] == "assistant" and log[-1]["content"] == answer


def files_containing(home: Path, needle: str) -> list[Path]:
    """Files under ``home`` whose bytes contain ``needle``."""
    raw = needle.encode()
    return [p for p in home.rglob("*") if p.is_file() and raw in p.read_bytes()]


# -- processes -------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    return pid_alive(pid)


def descendants(root: int) -> set[int]:
    """Every living process below ``root`` (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def assert_gone(pids: list[int], timeout: float = 5.0) -> None:
    """Every process of ``pids`` ends within ``timeout`` seconds (killed here if not)."""
    gone = wait_until(lambda: not any(alive(p) for p in pids), timeout)
    survivors = [p for p in pids if alive(p)]
    for pid in survivors:  # never leak them into the rest of the suite
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert gone, f"still running {timeout:g} s later: {survivors}"


def write_pid_code(path: Path) -> str:
    """A cell line that records the kernel's pid in ``path`` (atomically)."""
    return (
        f"import os as _os\n"
        f"open({str(path) + '.tmp'!r}, 'w').write(str(_os.getpid()))\n"
        f"_os.replace({str(path) + '.tmp'!r}, {str(path)!r})\n"
    )


def rlm_process(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[str]:
    """``python -m rlm ARGS`` started in the background, output captured. Its kernels see
    no PYTEST_CURRENT_TEST (with it ipykernel stops capturing fd-level output)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.Popen(
        [sys.executable, "-m", "rlm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=full_env,
        **kwargs,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"rlm did not exit within {timeout} s; stderr:\n{err}") from None
