"""The meta.json schema: lenient reading of old or foreign files, strict writing, and the
on-disk format the session readers and older rlm versions rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from rlm.logs.store import AgentNode
from rlm.logs.writer import SessionLog
from rlm.schema import Status, StopReason
from rlm.schema.meta import AgentMeta, MetaError, Usage

#: A meta.json as an early rlm wrote it: no usage_total, settings, cwd or ended_at; the
#: children listed by full id.
OLD_META = {
    "id": "20250101-000000-aaaaaa",
    "status": "done",
    "started_at": "2025-01-01T00:00:00Z",
    "model": "gpt-old",
    "task": "old task",
    "turns": 3,
    "stop_reason": "answer",
    "usage": {"prompt_tokens": 100, "completion_tokens": 20},
    "children": [{"id": "20250101-000000-aaaaaa/sub-abc123", "status": "done"}],
}


def write_meta(folder: Path, meta: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_an_old_meta_reads_with_defaults(tmp_path: Path):
    root = write_meta(tmp_path / OLD_META["id"], OLD_META)
    write_meta(root / "sub-abc123", {"status": "done", "task": "child"})
    node = AgentNode(root)
    assert node.status == Status.DONE == "done" and node.stop_reason == "answer"
    assert node.model == "gpt-old" and node.turns == 3 and node.task == "old task"
    assert node.usage() == (100, 20) and node.usage(total=True) == (0, 0)
    assert node.started is not None and node.started.year == 2025 and node.ended is None
    assert [child.task for child in node.children] == ["child"]
    assert node.meta.settings == {} and node.meta.cwd is None


def test_bad_values_fall_back_to_defaults_key_by_key(tmp_path: Path):
    meta = AgentMeta.read(
        write_meta(
            tmp_path / "s",
            {
                "status": "done",
                "task": "kept",
                "turns": "three",
                "pid": True,
                "usage": {"prompt_tokens": "12", "completion_tokens": -4, "cached_tokens": 9},
                "usage_total": [1, 2],
                "children": ["junk", {"id": "sub-1", "status": "done"}, {"id": 7}],
                "settings": "none",
            },
        )
    )
    assert meta.task == "kept" and meta.status is Status.DONE
    assert meta.turns == 0 and meta.pid is None and meta.settings == {}
    assert meta.usage.pair() == (0, 0) and meta.usage_total.pair() == (0, 0)
    assert meta.to_json()["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert [c.name for c in meta.children] == ["sub-1", ""]
    assert Usage.model_validate({"prompt_tokens": 5.0, "completion_tokens": 2}).pair() == (5, 2)


def test_unknown_values_and_keys_survive_a_rewrite(tmp_path: Path):
    """A newer rlm's status, stop reason or key is kept as it is, not lost on resume."""
    folder = write_meta(
        tmp_path / "s",
        {**OLD_META, "stop_reason": "quota", "status": "paused", "future": {"a": [1]}},
    )
    meta = AgentMeta.read(folder)
    assert meta.status == "paused" and meta.stop_reason == "quota"
    assert AgentNode(folder).status == "paused"
    log, _ = SessionLog.reopen(folder)
    log.close(status=Status.DONE, stop_reason=StopReason.ANSWER)
    written = json.loads((folder / "meta.json").read_text())
    assert written["future"] == {"a": [1]} and written["status"] == "done"
    assert written["stop_reason"] == "answer" and written["model"] == "gpt-old"


@pytest.mark.parametrize(
    ("text", "why"),
    [(None, "cannot read"), ("{not json", "not valid JSON"), ("[1]", "not a JSON object")],
)
def test_an_unreadable_meta_is_one_error(tmp_path: Path, text: str | None, why: str):
    folder = tmp_path / "s"
    folder.mkdir()
    if text is not None:
        (folder / "meta.json").write_text(text)
    with pytest.raises(MetaError, match=why):
        AgentMeta.read(folder)
    assert AgentNode(folder).status == "unknown"  # the readers show it, with defaults


def test_the_writer_writes_every_key_in_order_and_validates(tmp_path: Path):
    log = SessionLog(tmp_path / "s", {"id": "s", "model": "m", "task": "t"})
    log.update(usage={"prompt_tokens": 3, "completion_tokens": 1})
    log.close(status="error", stop_reason="max_turns", error="too long")
    written = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert list(written)[:3] == ["status", "started_at", "id"]
    assert set(written) >= {"depth", "answer", "turns", "children", "usage_total", "ended_at"}
    assert written["status"] == "error" and written["stop_reason"] == "max_turns"
    assert written["usage"] == {"prompt_tokens": 3, "completion_tokens": 1}
    assert written["error"] == "too long" and written["answer"] is None
    with pytest.raises(ValidationError):
        log.update(turns="many")  # a writer's mistake is raised where it happens
