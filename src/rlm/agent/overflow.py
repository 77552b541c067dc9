"""Context overflow: the endpoint's 400 when the conversation no longer fits its window.

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
from typing import Any

__all__ = ["overflow_detail"]

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
