"""Context overflow: the endpoint's 400 when the conversation no longer fits its window,
and automatic compaction, which makes room before (or after) it comes.

Compaction is the ``summarize`` tool done by the orchestrator: the model is asked for a
summary of the older turns of its live context, which are then dropped and replaced by it
(the turn in progress stays, and the kernel keeps every variable). It runs when a request's
prompt passed ``RLM_COMPACT_AT_TOKENS``, and once when the endpoint refuses a request as too
long for its window, after which the request is sent again; ``RLM_MAX_COMPACTIONS`` bounds
the attempts of one agent. It is logged as a ``summarize`` event with ``automatic: true``
(so a resumed session drops the same turns) and counted in ``metrics.compactions``.

Servers say it in different shapes; recognising them lets rlm say what to do instead of
quoting a server's message. Seen in practice:

* OpenAI and llama-cpp-python: ``error.code: "context_length_exceeded"``, with "maximum
  context length is N tokens ... resulted in M tokens" (OpenAI) or "Requested tokens (M)
  exceed context window of N" (llama-cpp-python);
* vLLM: "This model's maximum context length is N tokens. However, you requested M tokens";
* llama.cpp's llama-server: ``error.type: "exceed_context_size_error"`` with
  ``n_prompt_tokens`` and ``n_ctx``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from rlm.errors import ModelError

if TYPE_CHECKING:
    from rlm.agent.loop import Agent

__all__ = ["COMPACT_PROMPT", "compact", "overflow_detail"]

#: What the model is asked for when its context is compacted.
COMPACT_PROMPT = (
    "Your context is nearly full. The turns above (since the task and any earlier summary) "
    "are about to be dropped from your context and replaced by the summary you write now. "
    "Reply with that summary only, as plain text, without calling a tool: what you have "
    "established and still need (facts, results, file names, the names of variables in your "
    "kernel, decisions) and what is left to do. Your kernel keeps its state."
)

_MARKERS = ("context_length_exceeded", "exceed_context_size_error")
_PATTERNS = (
    # (regex, group of the window, group of the request)
    (re.compile(r"maximum context length is (\d+) tokens.*?(?:resulted in|requested) (\d+)"), 1, 2),
    (re.compile(r"[Rr]equested tokens \((\d+)\) exceed context window of (\d+)"), 2, 1),
)
_ADVICE = "/reset, or --input for big text"


def overflow_detail(status: int, body: str) -> str | None:
    """``context full (5,668 > 4,096 tokens): /reset, ...`` for an overflow error, else None."""
    if status not in (400, 413, 500):
        return None
    error = _error_object(body)
    message = str(error.get("message") or "") if error else body
    known = any(marker in body for marker in _MARKERS)
    sizes = _sizes(error) if error else None
    for pattern, window, request in _PATTERNS:
        match = pattern.search(message)
        if match:
            known = True
            sizes = sizes or (int(match.group(request)), int(match.group(window)))
    if not known:
        return None
    if sizes is None:
        return f"context full: {_ADVICE}"
    return f"context full ({sizes[0]:,} > {sizes[1]:,} tokens): {_ADVICE}"


def _error_object(body: str) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    return error if isinstance(error, dict) else data


def _sizes(error: dict[str, Any]) -> tuple[int, int] | None:
    prompt, window = error.get("n_prompt_tokens"), error.get("n_ctx")
    if isinstance(prompt, int) and isinstance(window, int):
        return prompt, window
    return None


async def compact(agent: Agent, reason: str) -> bool:
    """Ask the model to summarize all turns of ``agent``'s live context but the last, and
    drop them. Returns whether it did: there were no older turns, the attempts
    (``RLM_MAX_COMPACTIONS``) are spent, or the summary request failed (a ``ModelError``
    other than cancellation is logged, not raised: the caller goes on without it)."""
    context = agent.context
    droppable = len(context.turns) - 1
    if droppable < 1 or agent.compaction_attempts >= agent.settings.max_compactions:
        return False
    agent.compaction_attempts += 1
    kept = len(context.turns[-1].messages)
    messages = context.messages()[:-kept]
    messages.append({"role": "user", "content": COMPACT_PROMPT})
    schemas = [tool.schema(agent.settings) for tool in agent.tools.values()]
    try:
        reply = await agent.host.complete(
            messages, schemas, agent.settings.model, on_retry=agent._model_retry
        )
    except ModelError as exc:
        agent.log_event("compaction_failed", reason=reason, error=str(exc))
        return False
    agent.add_usage(reply.usage)
    content = reply.message.get("content")
    summary = content.strip() if isinstance(content, str) else ""
    if not summary:
        agent.log_event("compaction_failed", reason=reason, error="the reply had no summary")
        return False
    note = context.summarize(droppable, summary)
    agent.log.meta.metrics.compactions += 1
    agent.log_event(
        "summarize",
        turns=note.turns,
        summary=summary,
        flush_repl_state=False,
        automatic=True,
        reason=reason,
        usage=reply.usage.as_dict(),
    )
    return True
