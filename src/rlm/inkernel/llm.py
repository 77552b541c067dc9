"""``rlm.llm`` and ``rlm.llm_batch`` inside a kernel: sub-model calls made by the orchestrator.

A cell asks; the orchestrator (:mod:`rlm.runtime.llm`) holds the key, applies the run's
limits, makes the call and logs it. Nothing here talks to a model endpoint. The depth check
here only saves a round trip: the orchestrator decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rlm import inkernel
from rlm.control.channel import ControlClient
from rlm.errors import DepthLimitError, LlmError
from rlm.inkernel.kernel_channel import KernelChannelClient

__all__ = ["llm", "llm_batch"]

Prompt = str | list[dict[str, Any]]


_shared: list[ControlClient | KernelChannelClient] = []


def _client() -> ControlClient | KernelChannelClient:
    """One client for every call of this kernel: building its signing session costs about
    as much as the rest of a call's kernel side, and a batch makes thousands of calls. (The
    client keeps no socket or loop between requests, so sharing it across loops is safe.)"""
    if not _shared:
        _shared.append(inkernel._client())
    return _shared[0]


def _check_available() -> None:
    if inkernel._state.get("max_depth", 0) < 1:
        raise DepthLimitError(
            "rlm.llm is a sub-call and RLM_MAX_DEPTH is 0; set RLM_MAX_DEPTH to 1 or more to "
            "allow it"
        )


async def llm(
    prompt: Prompt,
    *,
    system: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    json: bool = False,
) -> str:
    """One model request (no tools, no kernel) made by the orchestrator; returns its text.

    ``prompt`` is the user message, or a list of chat messages (``{"role", "content"}``).
    ``json=True`` asks the endpoint for a JSON object. Raises ``rlm.LlmError`` when the call
    fails, ``rlm.DepthLimitError`` where sub-calls are off (``RLM_MAX_DEPTH=0``).
    """
    _check_available()
    content = {
        "prompt": prompt,
        "system": system,
        "model": model,
        "max_tokens": max_tokens,
        "json_mode": json,
        "cell": inkernel._current_cell(),
    }
    reply, _ = await _client().request("llm_request", content)
    if reply.get("status") == "ok":
        return str(reply["answer"])
    raise inkernel._decode_error(reply)


async def llm_batch(
    prompts: Sequence[Prompt],
    *,
    system: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    json: bool = False,
    concurrency: int | None = None,
    return_exceptions: bool = True,
) -> list[str | LlmError]:
    """``rlm.llm`` over many prompts at once; the answers come back in input order.

    A failed item does not fail the batch: its place holds the ``rlm.LlmError`` (test with
    ``isinstance(item, rlm.LlmError)``, read ``item.message``). With
    ``return_exceptions=False`` the first failure cancels the other items and is raised.
    ``concurrency`` caps this batch's calls in flight; the orchestrator's
    ``RLM_LLM_CONCURRENCY`` caps the whole run's in any case. Cancelling the call (an
    interrupted cell) cancels every pending item.
    """
    _check_available()
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    slots = asyncio.Semaphore(concurrency or len(prompts) or 1)

    async def one(prompt: Prompt) -> str | LlmError:
        try:
            async with slots:
                return await llm(
                    prompt, system=system, model=model, max_tokens=max_tokens, json=json
                )
        except LlmError as exc:
            if not return_exceptions:
                raise
            return exc

    tasks = [asyncio.ensure_future(one(prompt)) for prompt in prompts]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
