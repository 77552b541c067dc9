"""The model client: the OpenAI SDK plus a retry that rides out longer outages.

The SDK retries each request ``RLM_SDK_MAX_RETRIES`` times with its own short backoff;
around that, tenacity retries connection errors, timeouts, 429 and 5xx with exponential
backoff (``RLM_RETRY_ATTEMPTS`` attempts, waits capped at ``RLM_RETRY_MAX_WAIT``) and then
gives up with a :class:`ModelError` that says what went wrong. Malformed replies (not JSON,
no choices) are retried the same way: they are what a flaky gateway returns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import openai
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from rlm.config import Settings
from rlm.errors import ModelError

__all__ = ["ModelClient", "ModelReply", "Usage"]


@dataclass
class Usage:
    """Token counts, as reported by the endpoint."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass
class ModelReply:
    """One assistant message as the log and the next request need it."""

    message: dict[str, Any]
    usage: Usage
    latency: float
    finish_reason: str | None = None
    """Why the endpoint stopped: ``stop``, ``tool_calls``, ``length`` (cut at its token
    limit: the loop continues or ends with ``StopReason.LENGTH``), ... or None if not sent."""


class _BadReply(Exception):
    """The endpoint answered 2xx with something that is not a usable completion."""


def _retryable(exc: BaseException) -> bool:
    # A 2xx body that is not JSON surfaces from the SDK as a bare JSONDecodeError.
    retry_types = (
        openai.APIConnectionError,
        openai.APITimeoutError,
        _BadReply,
        json.JSONDecodeError,
    )
    if isinstance(exc, retry_types):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    # The SDK raises this when a 2xx body cannot be parsed as JSON.
    return isinstance(exc, openai.APIResponseValidationError)


class ModelClient:
    """Sends chat-completion requests for every agent of one orchestrator."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.key or "not-set",
            max_retries=settings.sdk_max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], model: str
    ) -> ModelReply:
        """One assistant turn, retried through outages; raises ``ModelError`` when it gives up."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.settings.retry_attempts),
            wait=wait_exponential(multiplier=0.5, max=self.settings.retry_max_wait),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(messages, tools, model)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise ModelError(
                self._redact(
                    f"model request failed after {self.settings.retry_attempts} attempts: "
                    f"{_describe(last)}"
                )
            ) from None
        except openai.APIError as exc:
            raise ModelError(self._redact(f"model request failed: {_describe(exc)}")) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _redact(self, text: str) -> str:
        """An endpoint may echo the key in its error text; it must not reach logs or stderr."""
        key = self.settings.key
        return text.replace(key, "<redacted>") if key else text

    async def _once(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], model: str
    ) -> ModelReply:
        started = time.perf_counter()
        # The messages and tools travel in ``extra_body``, which the SDK merges into the JSON
        # body as given, instead of as ``messages=``, which it walks against its TypedDicts on
        # every request (~0.2 ms per message: it grew with the conversation and dominated
        # later tool rounds, see docs/performance.md). Ours are JSON-ready already; the SDK's
        # retries, errors and response parsing are unchanged.
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        response = await self._client.chat.completions.create(
            model=model, messages=[], extra_body=body
        )
        latency = time.perf_counter() - started
        if not isinstance(response, openai.types.chat.ChatCompletion):
            raise _BadReply(f"expected a chat completion, got {type(response).__name__}")
        if not response.choices:
            raise _BadReply("the reply had no choices")
        message = response.choices[0].message
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    },
                }
                for call in message.tool_calls
                if call.type == "function"
            ]
        usage = Usage()
        if response.usage is not None:
            usage = Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
        return ModelReply(out, usage, latency, response.choices[0].finish_reason)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    hint = "; is RLM_BASE_URL an OpenAI-compatible API (usually ending in /v1)?"
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
        return "the endpoint's reply is not JSON" + hint
    if isinstance(exc, _BadReply):
        return f"the endpoint's reply is not a usable chat completion ({exc})" + hint
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the model endpoint ({exc.__cause__ or exc})"
    return f"{type(exc).__name__}: {exc}"
