"""The results file (one JSON line per task and method) and the ``eval`` tag of a session.

The file is appended to and flushed as each task ends, so an interrupted ``rlm eval`` keeps
every finished task, and a re-run with the same file skips them (:func:`load_results`). A
task that ended because of the infrastructure (the endpoint failed for good, a kernel could
not start, rlm crashed, the run was interrupted) is written with ``status: failed`` and run
again next time; a wrong answer, a budget, a turn limit or a timeout is a result of the
method and is kept (``status: scored``).

Each task's root session gets an ``eval`` key in its ``meta.json`` (written once the session
has ended) so ``rlm sessions export`` can attach the task's reward to its training records.
"""

from __future__ import annotations

import json
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlm.errors import ConfigError
from rlm.schema.meta import AgentMeta, MetaError

__all__ = [
    "RETRIED_REASONS",
    "EvalTag",
    "ResultStatus",
    "TaskResult",
    "append_result",
    "load_results",
    "tag_session",
]

#: Stop reasons that say nothing about the method: such tasks are run again on resume.
RETRIED_REASONS = frozenset(
    {"model_error", "kernel_error", "crash", "error", "cancelled", "interrupted", "config"}
)


class ResultStatus(str, Enum):
    SCORED = "scored"
    """The method ended (with or without an answer) and was scored; kept on resume."""
    FAILED = "failed"
    """The infrastructure failed (see ``RETRIED_REASONS``); run again on resume."""

    def __str__(self) -> str:
        return self.value


class TaskResult(BaseModel):
    """One line of the results file."""

    model_config = ConfigDict(extra="ignore")

    method: str
    task_id: str
    family: str
    length: str
    tokens: int
    kind: str = ""
    status: ResultStatus
    score: float
    reason: str | None = None
    """The stop reason (``answer``, ``max_turns``, ...), ``timeout``, or ``interrupted``."""
    answer: str | None = None
    gold: str | list[str]
    error: str | None = None
    truncated: bool = False
    """``direct`` only: the context was cut to fit ``--context-window``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    wall: float = 0.0
    """Seconds from the session's start to its end."""
    sub_calls: int = 0
    """``rlm.llm`` calls made by every agent of the task's tree."""
    sub_agents: int = 0
    """Agents below the root (``rlm.run`` and ``rlm.spawn`` children, at any depth)."""
    model: str = ""
    session: str | None = None
    """The task's session folder."""

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a result: a task run by a method with a model."""
        return (self.method, self.model, self.task_id)


class EvalTag(BaseModel):
    """The ``eval`` object in a task's root ``meta.json``; its names follow the ``verifiers``
    library's rollout columns (``answer``, ``reward``, ``metrics``, ``task``, ``info``)."""

    task: str
    """The family (verifiers' ``task`` column: which environment the rollout is from)."""
    example_id: str
    """The task id."""
    method: str
    answer: str | list[str]
    """The gold answer (verifiers' ``answer``: the reference, not the model's reply)."""
    reward: float
    """The score in [0, 1]."""
    metrics: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    """``length``, ``tokens``, ``kind``, ``scorer``, ``truncated``, ``reason``."""


def load_results(path: Path) -> dict[tuple[str, str, str], TaskResult]:
    """The readable lines of ``path`` by (method, model, task id), the last line winning; a line
    that is not a result (cut off by a kill, written by hand) is skipped."""
    found: dict[tuple[str, str, str], TaskResult] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    result = TaskResult.model_validate_json(line)
                except ValidationError:
                    continue
                found[result.key] = result
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise ConfigError(f"--results: cannot read {path}: {exc.strerror or exc}") from None
    return found


def append_result(path: Path, result: TaskResult) -> None:
    """One line, flushed now (a killed run keeps every task that ended)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(result.model_dump_json() + "\n")
        handle.flush()


def tag_session(folder: Path, tag: EvalTag) -> None:
    """Add ``eval`` to the ended session's ``meta.json`` (atomically: temp file + rename).
    A session folder that cannot be read or written is left as it is: the result line has
    the score anyway."""
    try:
        meta = AgentMeta.read(folder)
    except MetaError:
        return
    data = meta.to_json()
    data["eval"] = tag.model_dump(mode="json")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".meta-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=2)
        os.replace(tmp, folder / "meta.json")
    except OSError:
        return
