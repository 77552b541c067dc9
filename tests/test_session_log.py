"""The session folder writer: meta.json follows a running agent's counters with a bounded
lag, and is current at every point a reader relies on (creation, turn end, close)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rlm.logs.writer import META_DELAY, SessionLog


def read(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


async def test_counter_updates_are_coalesced_then_written(tmp_path: Path):
    log = SessionLog(tmp_path / "s", {"id": "s", "turns": 0})
    assert read(log.path)["status"] == "running"  # written at once on creation
    for turn in range(1, 6):
        log.update(turns=turn)
    assert read(log.path)["turns"] == 0  # not yet: one write will carry all five
    log.flush()  # what the agent does at the end of a turn
    assert read(log.path)["turns"] == 5
    log.update(turns=6)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while read(log.path)["turns"] != 6 and loop.time() < deadline:
        await asyncio.sleep(META_DELAY / 10)  # nobody flushes: the timer must write it
    assert read(log.path)["turns"] == 6
    log.close(status="done")
    assert read(log.path)["status"] == "done" and read(log.path)["ended_at"]


def test_outside_an_event_loop_updates_write_at_once(tmp_path: Path):
    log = SessionLog(tmp_path / "s", {"id": "s"})
    log.update(turns=3)
    assert read(log.path)["turns"] == 3
    log.close(status="done")


def test_reopen_marks_the_folder_running_under_this_process(tmp_path: Path):
    import os

    log = SessionLog(tmp_path / "s", {"id": "s", "pid": 1})
    log.append({"role": "user", "content": "hi"})
    log.close(status="done")
    again, lines = SessionLog.reopen(tmp_path / "s")
    meta = read(tmp_path / "s")
    assert meta["status"] == "running" and meta["pid"] == os.getpid()
    assert [line["content"] for line in lines] == ["hi"]
    again.close(status="done")


def test_reopen_keeps_messages_holding_unicode_line_separators(tmp_path: Path):
    """The log is JSON lines split on newlines only: U+2028, U+2029 and U+0085 are written
    raw (``ensure_ascii=False``) and must not cut a message in two on resume."""
    text = "one\u2028two\u2029three\x85four"
    log = SessionLog(tmp_path / "s", {"id": "s"})
    log.append({"role": "user", "content": text})
    log.append({"role": "assistant", "content": "ok"})
    log.close(status="done")
    again, lines = SessionLog.reopen(tmp_path / "s")
    assert [line["content"] for line in lines] == [text, "ok"]
    again.close(status="done")
