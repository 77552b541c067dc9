"""Model requests sent with the OpenAI SDK's own HTTP library, without importing the SDK.

Why: rlm builds the JSON body, reads the raw bytes with a cap, assembles the stream and
validates the reply itself; the SDK only sent the bytes. ``import openai`` is the largest
import of a run (its package imports all of ``openai.types``: ~0.5 s of CPU and ~30 MiB),
and a run that never fails never needs it. So a request goes out here, with what the SDK
would send: ``POST {base_url}/chat/completions``, ``Authorization: Bearer``, JSON content
type and accept, the SDK's User-Agent, its connection limits and redirects, one timeout of
``RLM_MODEL_TIMEOUT`` for every phase.

The library is the one the installed SDK sends with (openai 3.x ``httpx2``, earlier ``httpx``,
read from the package's metadata), so proxies, certificates and HTTP behaviour stay what they
were. On a failure, and only then, the SDK is imported (awaited off the event loop,
:mod:`rlm.agent.sdk`) and the failure becomes exactly the exception the SDK would have
raised: a non-2xx status through the SDK's own status-error construction (``RateLimitError``,
``BadRequestError``, ... with its message and body), a timeout as ``APITimeoutError``, any
other transport error as ``APIConnectionError``. The SDK's exception tree stays the error
contract that :mod:`rlm.agent.retry` classifies.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from importlib.metadata import PackageNotFoundError, requires, version
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rlm.agent.sdk import openai_module

__all__ = ["DEFAULT_BASE_URL", "ERROR_BODY_BYTES", "Transport", "chat_url", "http_library"]

#: Where the SDK sends requests when no base URL is set.
DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: Raw bytes of an error body read at most. An error body is read whole, decompressed, before
#: rlm quotes it; a gzip-bombed 500 would inflate in memory. Cut here, at most about 1000×
#: this decompressed; only 500 characters are quoted anyway.
ERROR_BODY_BYTES = 8 * 1024

#: The SDK's connection limits (``openai._constants.DEFAULT_CONNECTION_LIMITS``).
_MAX_CONNECTIONS = 1000
_MAX_KEEPALIVE = 100

_LIBRARIES = ("httpx2", "httpx")


@cache
def http_library_name() -> str:
    """``httpx2`` or ``httpx``: the HTTP library the installed ``openai`` declares it sends with.

    Read from the package metadata (``Requires-Dist``), not by importing openai; without
    metadata, whichever of the two is importable (httpx2 first, as newer SDKs use it)."""
    try:
        declared = requires("openai") or []
    except PackageNotFoundError:
        declared = []
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        match = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        if match and match.group(0).lower() in _LIBRARIES:
            return match.group(0).lower()
    for name in _LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ImportError("neither httpx2 nor httpx is installed (the openai package needs one)")


def http_library() -> ModuleType:
    """The HTTP library module."""
    return _LIBRARY


#: Imported with this module (before the event loop runs), not at the first request: its
#: ~0.1 s import would hold the loop.
_LIBRARY = importlib.import_module(http_library_name())


def chat_url(base_url: str | None) -> str:
    """``{base_url}/chat/completions`` joined the SDK's way: the base URL gets a trailing slash
    and keeps its query string."""
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit(parts._replace(path=path + "chat/completions"))


def _sdk_version() -> str:
    try:
        return version("openai")
    except PackageNotFoundError:  # pragma: no cover - openai is a dependency
        return "unknown"


def request_headers(api_key: str | None) -> dict[str, str]:
    """The headers the SDK's ``AsyncOpenAI`` sends with every request (its telemetry
    ``X-Stainless-*`` headers aside), organisation and project from the SDK's variables."""
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"AsyncOpenAI/Python {_sdk_version()}",
        "Authorization": f"Bearer {api_key or 'not-set'}",
    }
    for header, variable in (
        ("OpenAI-Organization", "OPENAI_ORG_ID"),
        ("OpenAI-Project", "OPENAI_PROJECT_ID"),
    ):
        value = os.environ.get(variable)
        if value:
            headers[header] = value
    return headers


def encode(body: dict[str, Any]) -> bytes:
    """The request body as the SDK serialises it (``openai._utils._json.openapi_dumps``)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class Transport:
    """The HTTP client of one run's model requests (one connection pool for every agent)."""

    def __init__(self, base_url: str | None, api_key: str | None, timeout: float) -> None:
        self.url = chat_url(base_url)
        self._headers = request_headers(api_key)
        self._timeout = timeout
        self._client: Any = None  # built at the first request
        self._sdk_client: Any = None  # built at the first failure, to build its exceptions
        #: Called when a request's body has been written to the connection (the HTTP core's
        #: ``trace`` extension): the orchestrator starts its kernel side then.
        self.on_sent: Callable[[], Any] | None = None

    def _http(self) -> Any:
        if self._client is None:
            lib = http_library()
            limits = lib.Limits(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE
            )
            # With a proxy in the environment the library routes by itself (a transport of
            # our own would turn its proxies off); else TLS is set up at the first https URL.
            own = None if urllib.request.getproxies() else _scheme_transport(lib, limits)
            self._client = lib.AsyncClient(
                timeout=lib.Timeout(self._timeout),
                limits=limits,
                follow_redirects=True,
                event_hooks={"response": [cap_error_body]},
                transport=own,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    @asynccontextmanager
    async def post(self, body: dict[str, Any], headers: dict[str, str]) -> AsyncIterator[Any]:
        """The 2xx response to ``body`` (the HTTP library's response, its body not read yet);
        every other outcome raises the exception the SDK would have raised."""
        lib = http_library()
        client = self._http()
        request = client.build_request(
            "POST",
            self.url,
            content=encode(body),
            headers={**self._headers, **headers},
            extensions={"trace": self._trace} if self.on_sent is not None else None,
        )
        try:
            response = await client.send(request, stream=True)
        except lib.TimeoutException as exc:
            sdk = await openai_module()
            raise sdk.APITimeoutError(request=request) from exc
        except Exception as exc:  # the SDK wraps every other transport failure
            sdk = await openai_module()
            raise sdk.APIConnectionError(request=request) from exc
        try:
            if not response.is_success:
                raise await self._status_error(response)
            yield response
        finally:
            await response.aclose()

    async def _trace(self, name: str, info: dict[str, Any]) -> None:
        """The HTTP core's trace callback: ``on_sent`` once the body is on the wire."""
        if name.endswith("send_request_body.complete") and self.on_sent is not None:
            self.on_sent()

    async def _status_error(self, response: Any) -> BaseException:
        """The SDK's exception for a non-2xx response (its body read, capped by the hook)."""
        # A body that breaks off: the error is the status, quoted without it.
        with contextlib.suppress(Exception):
            await response.aread()
        sdk = await openai_module()
        if self._sdk_client is None:
            self._sdk_client = sdk.AsyncOpenAI(
                api_key="not-set", base_url=self.url, max_retries=0, http_client=self._http()
            )
        try:
            error: BaseException = self._sdk_client._make_status_error_from_response(response)
        except Exception:  # an unreadable body, or an SDK without that private method
            message = f"Error code: {response.status_code}"
            error = self._sdk_client._make_status_error(message, body=None, response=response)
        return error


def _scheme_transport(lib: ModuleType, limits: Any) -> Any:
    """The library's own transport, one per scheme, each built at its first request.

    Why: building the library's transport loads the system's CA certificates into a TLS
    context (35-80 ms of CPU here), which the SDK did at start even for a plain ``http://``
    endpoint. ``https`` URLs get exactly the library's default (verified, ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` honoured); ``http`` URLs get a pool whose TLS context is never used,
    and would trust nothing if it were.
    """

    class SchemeTransport(lib.AsyncBaseTransport):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._pools: dict[str, Any] = {}

        async def handle_async_request(self, request: Any) -> Any:
            scheme = request.url.scheme
            pool = self._pools.get(scheme)
            if pool is None:
                if scheme == "https":
                    pool = lib.AsyncHTTPTransport(limits=limits)
                else:
                    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    pool = lib.AsyncHTTPTransport(limits=limits, verify=bare)
                self._pools[scheme] = pool
            return await pool.handle_async_request(request)

        async def aclose(self) -> None:
            for pool in self._pools.values():
                await pool.aclose()

    return SchemeTransport()


async def cap_error_body(response: Any) -> None:
    """Response hook: an error reply's body ends after ``ERROR_BODY_BYTES`` raw bytes."""
    if response.status_code >= 400:
        response.stream = _capped_stream(response, ERROR_BODY_BYTES)


def _capped_stream(response: Any, limit: int) -> Any:
    # The library's response iterator insists on its own AsyncByteStream class.
    inner = response.stream

    class Capped(http_library().AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            left = limit
            async for chunk in inner:
                yield chunk[:left]
                left -= len(chunk)
                if left <= 0:
                    break

        async def aclose(self) -> None:
            await inner.aclose()

    return Capped()
