"""Running tasks × methods: ``--jobs`` at once, each under a timeout, resumable.

Every task is generated when its turn comes (in a worker thread: a 1M-token context takes
a quarter of a second to build, which must not stall the sessions already running), run by
the method in a session of its own, scored, tagged in its ``meta.json`` and appended to the
results file. A result already in the file for the same method, model and task is not run
again unless it failed for an infrastructure reason (:data:`rlm.eval.results.RETRIED_REASONS`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rlm.config import Settings
from rlm.errors import AgentError, ConfigError, RLMError
from rlm.eval.methods import Method, MethodRun
from rlm.eval.results import (
    RETRIED_REASONS,
    EvalTag,
    ResultStatus,
    TaskResult,
    append_result,
    load_results,
    tag_session,
)
from rlm.eval.scoring import score
from rlm.eval.tasks import Task
from rlm.logs.store import load_tree

__all__ = ["Progress", "TaskSpec", "run_eval", "selected"]


@dataclass(frozen=True)
class TaskSpec:
    """A task known by its id before it is built (so finished ones are skipped unbuilt)."""

    id: str
    family: str
    length: str
    tokens: int
    make: Callable[[], Task]


class Progress(Protocol):
    """What the runner reports; the CLI's progress bar or lines implement it."""

    def start(self, total: int, skipped: int) -> None: ...

    def finished(self, result: TaskResult) -> None: ...

    def stop(self) -> None: ...


def _counts(session: Path | None) -> tuple[int, int]:
    """(``rlm.llm`` calls, sub-agents) of the whole tree of a session folder."""
    if session is None or not session.is_dir():
        return 0, 0
    nodes = load_tree(session).walk()
    return sum(node.meta.llm_calls for node in nodes), len(nodes) - 1


def _result(
    method: Method, task: Task, settings: Settings, out: MethodRun, wall: float
) -> TaskResult:
    reason = out.reason or "error"
    failed = reason in RETRIED_REASONS
    return TaskResult(
        method=method.name,
        task_id=task.id,
        family=task.family,
        length=task.length,
        tokens=task.tokens,
        kind=task.kind,
        status=ResultStatus.FAILED if failed else ResultStatus.SCORED,
        score=0.0 if failed else score(task, out.answer),
        reason=reason,
        answer=out.answer,
        gold=task.gold,
        error=out.error,
        truncated=out.truncated,
        prompt_tokens=out.usage.get("prompt_tokens") or 0,
        completion_tokens=out.usage.get("completion_tokens") or 0,
        cost=round(out.cost, 6),
        wall=round(wall, 3),
        model=settings.model,
        session=str(out.session) if out.session else None,
    )


async def _run_one(
    method: Method, spec: TaskSpec, settings: Settings, timeout: float | None
) -> TaskResult:
    task = await asyncio.to_thread(spec.make)
    out = MethodRun()
    started = time.monotonic()
    try:
        await asyncio.wait_for(method.run(task, settings, out), timeout)
    except asyncio.TimeoutError:
        out.reason, out.error = "timeout", f"no answer within --timeout {timeout:g}s"
    except AgentError as exc:  # the session could not start (kernel failure)
        out.reason, out.error = str(exc.reason), exc.message
        if exc.session_path and out.session is None:
            out.session = Path(exc.session_path)
    except ConfigError as exc:
        out.reason, out.error = "config", str(exc)
    except RLMError as exc:
        out.reason, out.error = "error", str(exc)
    wall = time.monotonic() - started
    result = _result(method, task, settings, out, wall)
    sub_calls, sub_agents = await asyncio.to_thread(_counts, out.session)
    result.sub_calls, result.sub_agents = sub_calls, sub_agents
    if out.session is not None:
        tag = EvalTag(
            task=task.family,
            example_id=task.id,
            method=method.name,
            answer=task.gold,
            reward=result.score,
            metrics={"score": result.score},
            info={
                "length": task.length,
                "tokens": task.tokens,
                "kind": task.kind,
                "scorer": str(task.scorer),
                "truncated": out.truncated,
                "reason": result.reason,
                "status": str(result.status),
            },
        )
        await asyncio.to_thread(tag_session, out.session, tag)
    return result


def selected(
    results: dict[tuple[str, str, str], TaskResult],
    methods: list[Method],
    specs: list[TaskSpec],
    model: str,
) -> list[TaskResult]:
    """The results of this selection (methods × tasks × model) found in the file."""
    out = []
    for method in methods:
        for spec in specs:
            found = results.get((method.name, model, spec.id))
            if found is not None:
                out.append(found)
    return out


async def run_eval(
    specs: list[TaskSpec],
    methods: list[Method],
    settings: Settings,
    results_path: Path,
    *,
    jobs: int,
    timeout: float | None,
    progress: Progress,
) -> list[TaskResult]:
    """Run what the results file does not have yet; return the selection's results."""
    done = await asyncio.to_thread(load_results, results_path)
    todo = [
        (method, spec)
        for method in methods
        for spec in specs
        if (found := done.get((method.name, settings.model, spec.id))) is None
        or found.status is ResultStatus.FAILED
    ]
    progress.start(len(todo), len(methods) * len(specs) - len(todo))
    slots = asyncio.Semaphore(jobs)

    async def guarded(method: Method, spec: TaskSpec) -> None:
        async with slots:
            result = await _run_one(method, spec, settings, timeout)
        await asyncio.to_thread(append_result, results_path, result)
        progress.finished(result)

    running = [asyncio.ensure_future(guarded(method, spec)) for method, spec in todo]
    try:
        await asyncio.gather(*running)
    finally:
        for future in running:  # one failed (or Ctrl-C): end the others' sessions too
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        progress.stop()
    final = await asyncio.to_thread(load_results, results_path)
    return selected(final, methods, specs, settings.model)
