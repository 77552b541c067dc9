"""The one retry layer of a model call: what is retried, how long to wait, what to tell people.

Requests are sent once each (:mod:`rlm.agent.transport`, no retries of the SDK's), so
``RLM_RETRY_ATTEMPTS`` counts HTTP attempts exactly. Failures arrive as the SDK's exceptions.
Retried: connection errors, timeouts (the HTTP library's and the attempt deadline
``RLM_MODEL_TIMEOUT``), 408, 429, 5xx and malformed 2xx replies. The wait is exponential with
full jitter (``wait_random_exponential``) so that parallel sub-agents hit by the same outage
do not come back in lockstep; a ``Retry-After`` header wins, capped at ``RLM_RETRY_MAX_WAIT``. Not retried: other 4xx
(the request itself is wrong), a reply over ``RLM_MAX_REPLY_BYTES``, a 500-class error that
repeats the same body (a deterministic failure: at most one more try), and a refused
connection before the endpoint ever answered (a wrong ``RLM_BASE_URL``: fail fast).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, wait_random_exponential

from rlm.agent.overflow import overflow_detail
from rlm.agent.reply import MalformedReply
from rlm.agent.sdk import loaded
from rlm.config import Settings
from rlm.sandbox.harden import redact_url

if TYPE_CHECKING:
    import openai

__all__ = [
    "AttemptTimeout",
    "BodyReadError",
    "Failure",
    "OnRetry",
    "ReplyTooLarge",
    "RetryPolicy",
    "describe",
]

log = logging.getLogger("rlm.agent.retry")

#: ``on_retry(attempt, attempts, wait, reason)``: the attempt about to be made (2 for the
#: first retry), the total allowed, the seconds until then, and a short reason.
OnRetry = Callable[[int, int, float, str], Any]

#: How much of an error body is quoted in a message.
QUOTE_CHARS = 500

#: Statuses a gateway answers with a canned page while the server behind it is down; their
#: bodies repeat by nature, so a repeat says nothing about the request.
_GATEWAY_STATUSES = {502, 503, 504}

_BASE_URL_HINT = "; is RLM_BASE_URL an OpenAI-compatible API (usually ending in /v1)?"


class AttemptTimeout(Exception):
    """One attempt did not finish within ``RLM_MODEL_TIMEOUT`` seconds, headers to last byte."""


class ReplyTooLarge(Exception):
    """The decoded reply exceeds ``RLM_MAX_REPLY_BYTES``."""


class BodyReadError(Exception):
    """The connection failed while the reply body was being read (after a 2xx status)."""


@dataclass(frozen=True)
class Failure:
    """How one failed attempt is handled and reported."""

    retryable: bool
    reason: str
    """Short, for the progress line: ``connection refused``, ``HTTP 503``, ..."""
    detail: str
    """One line for the final error message."""
    retry_after: float | None = None
    repeat_key: str | None = None
    """For a 500-class error: its body, to notice the same error coming back."""
    overflow: bool = False
    """The conversation does not fit the endpoint's context window."""


def describe(exc: BaseException, *, reached: bool, settings: Settings) -> Failure:
    """Classify the exception one attempt ended with."""
    # None until a failed request has imported the SDK (rlm.agent.sdk): no exception can be
    # one of its own before then.
    sdk = loaded()
    if sdk is not None and isinstance(exc, sdk.APIStatusError):
        return _status_failure(exc)
    if isinstance(exc, AttemptTimeout):
        seconds = f"{settings.model_timeout:g}"
        return Failure(
            True,
            f"no reply within {seconds} s",
            f"no complete reply within {seconds} s (RLM_MODEL_TIMEOUT)",
        )
    if sdk is not None and isinstance(exc, sdk.APITimeoutError):
        return Failure(True, "timed out", "the model endpoint timed out")
    if sdk is not None and isinstance(exc, sdk.APIConnectionError):
        if _refused(exc):
            where = redact_url(settings.base_url) or "the default OpenAI endpoint"
            detail = f"cannot reach the model endpoint (connection refused at {where})"
            if not reached:
                return Failure(False, "connection refused", detail + "; is RLM_BASE_URL right?")
            return Failure(True, "connection refused", detail)
        cause = exc.__cause__ or exc
        return Failure(True, "connection failed", f"cannot reach the model endpoint ({cause})")
    if isinstance(exc, BodyReadError):
        return Failure(
            True,
            "connection dropped",
            f"cannot reach the model endpoint (the connection broke mid-reply: {exc})",
        )
    if isinstance(exc, MalformedReply):
        text = str(exc)
        # What a web page or another API would give: perhaps the URL is wrong.
        wrong_url = any(s in text for s in ("not JSON", "no choices", "not an object"))
        hint = _BASE_URL_HINT if wrong_url else ""
        return Failure(True, "malformed reply", text + hint)
    if isinstance(exc, ReplyTooLarge):
        return Failure(False, "reply too large", str(exc))
    return Failure(False, type(exc).__name__, f"{type(exc).__name__}: {exc}")


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, ConnectionRefusedError) or "connection refused" in str(node).lower():
            return True
        node = node.__cause__ or node.__context__
    return False


def _status_failure(exc: openai.APIStatusError) -> Failure:
    status = exc.status_code
    if status in (401, 403):
        # Never quoted: auth failures are where endpoints echo the credentials they got.
        what = "rejected the API key" if status == 401 else "refused access"
        return Failure(
            False, f"HTTP {status}", f"HTTP {status}: the endpoint {what} (check RLM_API_KEY)"
        )
    full = overflow_detail(status, _body(exc.response))
    if full is not None:  # the conversation does not fit: no retry can help
        return Failure(False, f"HTTP {status}", full, overflow=True)
    text = _error_text(exc.response)
    detail = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    retryable = status in (408, 429) or status >= 500
    repeat = text if status >= 500 and status not in _GATEWAY_STATUSES else None
    after = _retry_after(exc.response.headers) if retryable else None
    return Failure(retryable, f"HTTP {status}", detail, after, repeat)


def _body(response: Any) -> str:
    try:
        return str(response.text)
    except Exception:  # a body that cannot be decoded is not worth a second failure
        return ""


def _error_text(response: Any) -> str:
    """The endpoint's own message (``error.message``, ``message``, ``detail``) or its body."""
    try:
        raw = response.text
    except Exception:  # a body that cannot be decoded is not worth a second failure
        return ""
    text: Any = raw
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message", error)
        for candidate in (error, data.get("message"), data.get("detail")):
            if candidate:
                text = candidate if isinstance(candidate, str) else json.dumps(candidate)
                break
    line = " ".join(str(text).split())
    return line if len(line) <= QUOTE_CHARS else line[: QUOTE_CHARS - 1] + "…"


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = when.timestamp() - time.time()
        if seconds == seconds:  # not NaN
            return max(0.0, seconds)
    return None


class RetryPolicy:
    """The tenacity hooks of one model call (``retry``, ``stop``, ``wait``, ``before_sleep``)."""

    def __init__(
        self,
        settings: Settings,
        classify: Callable[[BaseException], Failure],
        on_retry: OnRetry | None,
    ) -> None:
        self.attempts = settings.retry_attempts
        self._classify = classify
        self._on_retry = on_retry
        self._backoff = wait_random_exponential(multiplier=0.5, max=settings.retry_max_wait)
        self._after_cap = settings.retry_max_wait
        self._last: Failure | None = None
        self._repeats = 0
        self.repeated = False

    def failure(self, state: RetryCallState) -> Failure | None:
        exc = state.outcome.exception() if state.outcome is not None else None
        return None if exc is None else self._classify(exc)

    def retry(self, state: RetryCallState) -> bool:
        failure = self.failure(state)
        return failure is not None and failure.retryable

    def stop(self, state: RetryCallState) -> bool:
        failure = self.failure(state)
        if failure is not None and failure.repeat_key is not None:
            same = self._last is not None and self._last.repeat_key == failure.repeat_key
            self._repeats = self._repeats + 1 if same else 0
        else:
            self._repeats = 0
        self._last = failure
        # The same 500-class body twice in a row: one more try, then give up.
        self.repeated = self._repeats >= 2
        return self.repeated or state.attempt_number >= self.attempts

    def wait(self, state: RetryCallState) -> float:
        failure = self.failure(state)
        if failure is not None and failure.retry_after is not None:
            return min(failure.retry_after, self._after_cap)
        return float(self._backoff(state))

    def before_sleep(self, state: RetryCallState) -> None:
        if self._on_retry is None:
            return
        failure = self.failure(state)
        wait = state.upcoming_sleep
        reason = failure.reason if failure is not None else "error"
        try:
            self._on_retry(state.attempt_number + 1, self.attempts, wait, reason)
        except Exception:  # observing a retry must never end the call
            log.warning("on_retry callback failed; ignored", exc_info=True)
