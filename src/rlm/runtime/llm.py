"""Sub-model calls: the orchestrator's side of ``rlm.llm`` and ``rlm.llm_batch``.

A cell's ``await rlm.llm(prompt)`` arrives here as an ``llm_request`` over the signed control
channel and becomes one request through the orchestrator's :class:`ModelClient`, so the
kernel never holds the API key and the run's retry, timeout, size and redaction rules apply
as they do to agent turns. The orchestrator decides the limits: sub-model calls need
``RLM_MAX_DEPTH >= 1`` (they are sub-calls, as in the recursive-language-model paper, but
start no agent, so the deepest agent may make them too), come only from the cell that is
running, and at most ``RLM_LLM_CONCURRENCY`` of them are in flight for the whole run, however
many a cell gathers. Each call is one line of the caller's ``llm_calls.jsonl``, written when
it ends (prompt, answer, usage, latency, model, error), and its tokens count in the caller's
usage and every ancestor's ``usage_total``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.agent import events as ev
from rlm.agent.model import REQUEST_DEPTH, ModelClient
from rlm.agent.reply import ModelReply, Usage
from rlm.config import Settings
from rlm.control.dispatch import Request
from rlm.errors import ConfigError, DepthLimitError, LlmError, ModelError, RLMError
from rlm.logs.writer import now_iso
from rlm.schema.control import LlmReply, LlmRequest, encode_error

if TYPE_CHECKING:
    from rlm.agent.loop import Agent
    from rlm.runtime.budget import CostMeter

__all__ = ["LLM_LOG", "LlmCalls"]

#: The file, in the calling agent's session folder, with one line per sub-model call.
LLM_LOG = "llm_calls.jsonl"

_CELL_ENDED = (
    "the cell that called rlm.llm has ended: await the call (or the task that makes it) "
    "before the cell ends"
)

Reply = tuple[dict[str, Any], list[bytes]]


class LlmCalls:
    """Serves ``llm_request`` messages for every agent of one orchestrator."""

    def __init__(self, settings: Settings) -> None:
        self._slots = asyncio.Semaphore(settings.llm_concurrency)
        self.in_flight = 0
        """Calls holding a slot now (what the concurrency tests and the live view read)."""
        self.peak = 0
        """The most calls that were ever in flight at once this run."""

    async def handle(
        self, agent: Agent, req: Request, model: ModelClient, budget: CostMeter
    ) -> Reply:
        """Check one request, make the model call, log it, and build the reply."""
        if agent.settings.max_depth < 1:
            return _error(
                DepthLimitError(
                    "rlm.llm is a sub-call and RLM_MAX_DEPTH is 0; set RLM_MAX_DEPTH to 1 or "
                    "more to allow it"
                )
            )
        try:
            request: LlmRequest = LlmRequest.parse(req.content, "llm_request")
        except ConfigError as exc:
            return _error(LlmError(str(exc)))
        if request.cell is not None and request.cell != agent.running_cell:
            return _error(LlmError(_CELL_ENDED))
        current = asyncio.current_task()
        if current is not None:
            agent.adopt_cell_child(current)  # the cell's end cancels a call still pending
        name = request.model or agent.settings.model
        try:
            budget.require_price(name)
        except ConfigError as exc:
            return _error(LlmError(str(exc)))
        messages = request.messages()
        options: dict[str, Any] = {}
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        if request.json_mode:
            options["response_format"] = {"type": "json_object"}
        retries: list[str] = []

        def on_retry(attempt: int, attempts: int, wait: float, reason: str) -> None:
            retries.append(reason)

        record: dict[str, Any] = {"model": name, "messages": messages, **options}
        started = time.monotonic()
        reply: ModelReply | None = None
        try:
            async with self._slots:
                budget.check("rlm.llm call")  # also for calls queued while it was spent
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                REQUEST_DEPTH.set(agent.depth + 1)  # a sub-call: X-RLM-Depth one below
                try:
                    reply = await model.complete(
                        messages, [], name, on_retry=on_retry, options=options
                    )
                finally:
                    self.in_flight -= 1
        except asyncio.CancelledError:
            record["error"] = "cancelled"
            raise
        except RLMError as exc:
            record["error"] = str(exc)
            return _error(LlmError(str(exc)) if isinstance(exc, ModelError) else exc)
        finally:
            record["latency"] = round(time.monotonic() - started, 6)
            if retries:
                record["retries"] = retries
            _account(agent, record, reply)
        return LlmReply(answer=record["answer"], usage=reply.usage.as_dict()).content(), []


def _account(agent: Agent, record: dict[str, Any], reply: ModelReply | None) -> None:
    """Log one finished call and count it in the agent's meta (and its tokens up the tree)."""
    usage = reply.usage if reply is not None else Usage()
    if reply is not None:
        record["answer"] = reply.message.get("content") or ""
        record["usage"] = usage.as_dict()
        record["finish_reason"] = reply.finish_reason
        record["served_model"] = reply.model
    record.setdefault("answer", None)
    _append(agent.log.path / LLM_LOG, {"timestamp": now_iso(), **record})
    agent.emit(
        ev.LlmCallFinished,
        model=record["model"],
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency=record["latency"],
        error=record.get("error"),
    )
    meta = agent.log.meta
    totals = meta.llm_usage.model_copy()
    totals.prompt_tokens += usage.prompt_tokens or 0
    totals.completion_tokens += usage.completion_tokens or 0
    agent.log.update(llm_calls=meta.llm_calls + 1, llm_usage=totals)
    if reply is not None:
        agent.add_usage(usage, record["model"])


def _append(path: Path, record: dict[str, Any]) -> None:
    """One line, flushed to the OS as the call ends (a killed run keeps every finished call).
    A log that cannot be written does not fail the call: the cell already paid for it."""
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError:
        pass


def _error(exc: BaseException) -> Reply:
    return encode_error(exc), []
