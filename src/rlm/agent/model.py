"""The model client: one chat-completion call, retried through outages, validated on the way in.

Requests go out with the SDK's own HTTP library (:mod:`rlm.agent.transport`); the SDK itself
is imported only when a request fails, to raise the exception it would have raised.

One retry layer (:mod:`rlm.agent.retry`): nothing below it retries, and tenacity retries
with jittered exponential backoff, reporting each retry to the caller's ``on_retry``. Each
attempt is bounded end to end by ``RLM_MODEL_TIMEOUT`` (an endpoint that sends headers and
then trickles bytes cannot hold a run forever) and its decoded body by
``RLM_MAX_REPLY_BYTES`` (a gzip bomb is refused, not inflated). The body is read raw and
validated by :mod:`rlm.agent.reply`; failures end as one-line :class:`ModelError` messages
with every trace of the API key redacted (:mod:`rlm.agent.redact`).

Requests stream (``stream=True`` with usage included), so the caller's ``on_delta`` sees the
text as it is written; the chunks are assembled (:mod:`rlm.agent.stream`) into the body a
plain request would have got and validated the same way, under the same deadline and size
cap. An endpoint that answers a streamed request with plain JSON is read as such; one that
refuses streaming (a 4xx naming ``stream``) is asked again without it, at once, and is not
asked to stream again for the rest of the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from tenacity import AsyncRetrying

from rlm.agent.redact import Redactor
from rlm.agent.reply import MalformedReply, ModelReply, Usage, parse_reply
from rlm.agent.retry import (
    AttemptTimeout,
    BodyReadError,
    Failure,
    OnRetry,
    ReplyTooLarge,
    RetryPolicy,
    describe,
)
from rlm.agent.sdk import loaded
from rlm.agent.stream import DeltaKind, OnDelta, StreamAssembler
from rlm.agent.transport import Transport
from rlm.config import Settings
from rlm.errors import ContextOverflowError, ModelError

if TYPE_CHECKING:
    import openai

__all__ = ["REQUEST_DEPTH", "DeltaKind", "ModelClient", "ModelReply", "OnDelta", "OnRetry", "Usage"]

log = logging.getLogger("rlm.agent.model")

#: Statuses with which an endpoint refuses a streamed request it would answer plainly.
_STREAM_REFUSALS = frozenset({400, 404, 405, 415, 422, 501})

#: What one attempt may raise besides the SDK's ``openai.APIError``; anything else is a bug in
#: rlm and propagates as such.
_RLM_ATTEMPT_ERRORS = (AttemptTimeout, BodyReadError, MalformedReply, ReplyTooLarge)


def _attempt_errors() -> tuple[type[BaseException], ...]:
    sdk = loaded()
    return _RLM_ATTEMPT_ERRORS if sdk is None else (sdk.APIError, *_RLM_ATTEMPT_ERRORS)


def _status_error(exc: BaseException) -> bool:
    sdk = loaded()
    return sdk is not None and isinstance(exc, sdk.APIStatusError)


#: The depth in the session tree a request is made at, sent as the ``X-RLM-Depth`` header: 0
#: for the root's turns, n for an agent at depth n, n + 1 for an ``rlm.llm`` call of its cells.
#: An RL harness behind ``RLM_BASE_URL`` uses it to keep only the root's requests in the
#: trajectory it trains on (verifiers' rlm harness does). Set by whoever asks for the request
#: (the agent loop, ``rlm.llm``) in its own task's context.
REQUEST_DEPTH: ContextVar[int] = ContextVar("rlm_request_depth", default=0)


class ModelClient:
    """Sends chat-completion requests for every agent of one orchestrator (one run)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._transport = Transport(settings.base_url, settings.key, settings.model_timeout)
        self._redact = Redactor(settings.key)
        # Whether the endpoint has ever answered this run: a refused connection before that
        # is a wrong RLM_BASE_URL (fail fast), after that an outage (retry).
        self._reached = False
        # Cleared for the rest of the run when the endpoint refuses a streamed request.
        self.streaming = True

    async def close(self) -> None:
        await self._transport.aclose()

    @property
    def on_sent(self) -> Callable[[], Any] | None:
        """Called when a request's body has been written to the connection."""
        return self._transport.on_sent

    @on_sent.setter
    def on_sent(self, callback: Callable[[], Any] | None) -> None:
        self._transport.on_sent = callback

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        model: str,
        on_retry: OnRetry | None = None,
        options: dict[str, Any] | None = None,
        on_delta: OnDelta | None = None,
    ) -> ModelReply:
        """One assistant turn, retried through outages; raises ``ModelError`` when it gives up.

        ``on_retry(attempt, attempts, wait, reason)`` is called before each retry's wait;
        ``options`` are body fields set per request (``max_tokens``, ``response_format``:
        what ``rlm.llm`` lets a cell choose); ``on_delta(kind, text)`` hears each piece of
        streamed text (a retried attempt streams its text again from the start).
        """
        policy = RetryPolicy(self.settings, self._classify, on_retry)
        retrying = AsyncRetrying(
            retry=policy.retry,
            stop=policy.stop,
            wait=policy.wait,
            before_sleep=policy.before_sleep,
            reraise=True,
        )
        body = self.request_body(messages, tools)
        if options:
            body.update(options)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(model, body, on_delta)
        except Exception as exc:
            if not isinstance(exc, _attempt_errors()):
                raise
            failure = self._classify(exc)
            made = retrying.statistics.get("attempt_number", 1)
            if made > 1:
                same = " (the same error each time)" if policy.repeated else ""
                message = f"model request failed after {made} attempts{same}: {failure.detail}"
            else:
                message = f"model request failed: {failure.detail}"
            error = ContextOverflowError if failure.overflow else ModelError
            raise error(self._redact(message)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def request_body(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The JSON body besides ``model``, shaped so that strict local servers accept it.

        The messages and tools travel in ``extra_body``, which the SDK merges as given,
        instead of ``messages=``, which it walks against its TypedDicts on every request
        (~0.2 ms per message, see docs/performance.md).
        """
        body: dict[str, Any] = {"messages": [_wire_message(m) for m in messages]}
        if tools:
            body["tools"] = tools
            # Without it llama-cpp-python's chat templates render no tools at all.
            body["tool_choice"] = "auto"
        if self.settings.max_completion_tokens:
            body["max_tokens"] = self.settings.max_completion_tokens
        return body

    def _classify(self, exc: BaseException) -> Failure:
        if _status_error(exc):
            self._reached = True
        return describe(exc, reached=self._reached, settings=self.settings)

    async def _attempt(
        self, model: str, body: dict[str, Any], on_delta: OnDelta | None
    ) -> ModelReply:
        started = time.perf_counter()
        try:
            if self.streaming:
                try:
                    data = await asyncio.wait_for(
                        self._fetch(model, _streamed(body), on_delta), self.settings.model_timeout
                    )
                    return parse_reply(data, time.perf_counter() - started)
                except Exception as exc:
                    status = _refused_streaming(exc)
                    if status is None:
                        raise
                    self.streaming = False
                    log.info("the endpoint refused a streamed request (HTTP %s)", status)
            left = self.settings.model_timeout - (time.perf_counter() - started)
            data = await asyncio.wait_for(self._fetch(model, body, None), max(left, 0.001))
        except asyncio.TimeoutError:
            raise AttemptTimeout() from None
        return parse_reply(data, time.perf_counter() - started)

    async def _fetch(self, model: str, body: dict[str, Any], on_delta: OnDelta | None) -> bytes:
        """The decoded body of a 2xx reply, read with a cap (other statuses raise the SDK's
        errors); a streamed one (``text/event-stream``) assembled into the body of a plain
        reply."""
        limit = self.settings.max_reply_bytes
        depth = {"X-RLM-Depth": str(REQUEST_DEPTH.get())}
        async with self._transport.post({"model": model, **body}, depth) as response:
            self._reached = True
            kind = response.headers.get("content-type", "")
            stream = StreamAssembler(on_delta) if "text/event-stream" in kind.lower() else None
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ReplyTooLarge(
                            f"the reply is larger than {limit} bytes (RLM_MAX_REPLY_BYTES)"
                        )
                    if stream is not None:
                        stream.feed(chunk)
                    else:
                        chunks.append(chunk)
            except (ReplyTooLarge, MalformedReply):
                raise
            except Exception as exc:  # the HTTP library's transport and decoding errors
                if "Decod" in type(exc).__name__:
                    raise MalformedReply("the reply's content encoding is broken") from None
                raise BodyReadError(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                ) from None
        return stream.body() if stream is not None else b"".join(chunks)


def _streamed(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


def _refused_streaming(error: BaseException) -> int | None:
    """The status of a 4xx (or 501) whose error names streaming: the endpoint cannot stream,
    the request is fine otherwise. None for other errors: those fail as they are."""
    if not _status_error(error):
        return None
    exc = cast("openai.APIStatusError", error)
    if exc.status_code not in _STREAM_REFUSALS:
        return None
    try:
        text = exc.response.text
    except Exception:  # an unread or undecodable body
        text = ""
    return exc.status_code if "stream" in f"{exc.message} {text[:2000]}".lower() else None


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    # An assistant message with tool calls may have no text; several servers reject
    # ``content: null`` there. New replies already say "" (rlm.agent.reply); this covers
    # messages replayed from older logs and contexts built by hand.
    if message.get("content") is None and message.get("tool_calls"):
        return {**message, "content": ""}
    return message
