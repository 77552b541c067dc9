"""A small asyncio client of the Jupyter kernels REST + websocket API of a kernel gateway.

Jupyter Kernel Gateway, Jupyter Enterprise Gateway and jupyter_server all serve the same API:
``POST /api/kernels`` starts a kernel, ``DELETE /api/kernels/<id>`` stops it,
``POST .../interrupt`` and ``.../restart`` do what they say, and the websocket
``/api/kernels/<id>/channels`` carries the kernel's messages as JSON text, each with a
``channel`` field (``shell``, ``iopub``, ...). The gateway signs and verifies the ZeroMQ
messages itself, so this side never holds the kernel's key.

jupyter_server's own ``GatewayKernelClient`` cannot be used standalone (no token on the
websocket, no ``channel`` field), so this is ~150 lines of tornado (already installed with
ipykernel). The token travels as an ``Authorization: token ...`` header, never in a URL, so it
is not in the gateway's access log nor in rlm's session log, which records :attr:`shown` only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from rlm.errors import ConfigError, KernelError

__all__ = ["GatewayClient", "GatewaySocket", "redact_url"]

#: REST requests in flight at once per gateway (kernel starts of a fan-out run side by side).
MAX_REQUESTS = 1024

#: Seconds one REST request may take (a restart waits for the new kernel's first reply).
REQUEST_TIMEOUT = 120.0


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: what logs and errors may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class GatewaySocket:
    """One kernel's websocket: send a message to a channel, receive the next one."""

    def __init__(self, connection: WebSocketClientConnection) -> None:
        self._connection = connection
        self._session = Session(key=b"", username="rlm")

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
    ) -> str:
        """Send a message (``header`` adds header fields, e.g. a ``subshell_id``); returns
        its msg_id (the parent id of its replies). With buffers it goes as a binary frame."""
        msg = self._session.msg(msg_type, content, parent=parent)
        msg["header"].update(header or {})
        msg["channel"] = channel
        msg["buffers"] = list(buffers or [])
        data: str | bytes = _pack(msg) if msg["buffers"] else json.dumps(msg, default=json_default)
        future = self._connection.write_message(data, binary=isinstance(data, bytes))
        future.add_done_callback(_ignore_closed)
        return str(msg["header"]["msg_id"])

    async def receive(self) -> dict[str, Any] | None:
        """The next message (``channel``, ``header``, ``parent_header``, ``content``), or
        None once the websocket is closed (kernel gone, gateway gone, network lost)."""
        while True:
            data = await self._connection.read_message()
            if data is None:
                return None
            try:
                msg = _unpack(data) if isinstance(data, bytes) else json.loads(data)
            except (ValueError, struct.error, UnicodeDecodeError):
                continue
            if isinstance(msg, dict) and isinstance(msg.get("header"), dict):
                msg.setdefault("parent_header", {})
                msg.setdefault("content", {})
                return msg

    def close(self) -> None:
        self._connection.close()


def _pack(msg: dict[str, Any]) -> bytes:
    """A message with buffers as one binary frame, as jupyter_server reads it: the number
    of parts and their offsets (32-bit, network order), the JSON, then the buffers."""
    head = {key: value for key, value in msg.items() if key != "buffers"}
    parts = [json.dumps(head, default=json_default).encode(), *msg["buffers"]]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets) + b"".join(parts)


def _unpack(data: bytes) -> Any:
    """The inverse of :func:`_pack`: a kernel message whose buffers came in a binary frame."""
    count = struct.unpack("!I", data[:4])[0]
    offsets = [*struct.unpack(f"!{count}I", data[4 : 4 * (count + 1)]), len(data)]
    parts = [data[start:stop] for start, stop in itertools.pairwise(offsets)]
    msg = json.loads(parts[0].decode())
    if isinstance(msg, dict):
        msg["buffers"] = parts[1:]
    return msg


def _ignore_closed(future: Any) -> None:
    if not future.cancelled() and isinstance(future.exception(), WebSocketClosedError):
        return  # a closed socket is seen by the reader as the end of the stream
    future.exception()


class GatewayClient:
    """The REST and websocket API of one gateway URL."""

    def __init__(self, url: str, token: str | None, *, max_message_bytes: int) -> None:
        self.url = url.rstrip("/")
        #: The URL as logs show it (no credentials, no query).
        self.shown = redact_url(url)
        self._token = token
        self._max_message_bytes = max_message_bytes
        self._http: AsyncHTTPClient | None = None

    def _client(self) -> AsyncHTTPClient:
        """This gateway's own HTTP client. tornado's shared one runs 10 requests at once
        and fails the others with HTTP 599 after waiting ``connect_timeout`` in its queue:
        a fan-out of 50 sub-agents starts 50 kernels at once, each start a slow request."""
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_clients=MAX_REQUESTS)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"token {self._token}"
        return headers

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, allow: int = 0
    ) -> Any:
        """One REST call; the JSON reply (None for 204, or for ``allow`` status)."""
        request = HTTPRequest(
            f"{self.url}{path}",
            method=method,
            headers=self._headers(),
            body=json.dumps(body) if body is not None else ("" if method == "POST" else None),
            request_timeout=REQUEST_TIMEOUT,
            connect_timeout=20.0,
            follow_redirects=False,
        )
        try:
            response = await self._client().fetch(request)
        except HTTPClientError as exc:
            if exc.code == allow:
                return None
            raise self._refused(exc.code, exc.response.body if exc.response else b"") from None
        except OSError as exc:
            raise KernelError(
                f"RLM_KERNEL_GATEWAY: cannot reach {self.shown}: {exc.strerror or exc}"
            ) from None
        if not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            raise KernelError(f"{self.shown}{path}: the gateway's reply is not JSON") from None

    def _refused(self, code: int, body: bytes) -> RLMErrorType:
        if code in (401, 403):
            return ConfigError(
                f"RLM_KERNEL_GATEWAY: {self.shown} refused the token (HTTP {code}); "
                "check RLM_KERNEL_GATEWAY_TOKEN or RLM_KERNEL_GATEWAY_TOKEN_FILE"
            )
        reason = ""
        with contextlib.suppress(ValueError, AttributeError):
            reason = str(json.loads(body).get("message") or "")
        detail = f": {reason[:300]}" if reason else ""
        return KernelError(f"kernel gateway {self.shown}: HTTP {code}{detail}")

    async def check(self, spec_name: str | None) -> None:
        """Before the run: the gateway answers, takes the token and has ``spec_name``;
        each failure is a one-line :class:`ConfigError`."""
        try:
            specs = await self._request("GET", "/api/kernelspecs")
        except KernelError as exc:
            raise ConfigError(str(exc)) from None
        names = specs.get("kernelspecs") if isinstance(specs, dict) else None
        if spec_name and isinstance(names, dict) and spec_name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ConfigError(
                f"RLM_KERNEL_SPEC: {self.shown} has no kernelspec {spec_name!r} (it has: {known})"
            )

    async def start_kernel(self, spec_name: str | None, env: dict[str, str]) -> str:
        """Start a kernel; its id. ``env`` reaches the kernel only for names the gateway
        allows (``KERNEL_*`` and its configured list), so rlm's own variables are set by
        the bootstrap instead."""
        body: dict[str, Any] = {"env": env}
        if spec_name:
            body["name"] = spec_name
        model = await self._request("POST", "/api/kernels", body)
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            raise KernelError(f"kernel gateway {self.shown}: no kernel id in its reply")
        return str(model["id"])

    async def kernel_state(self, kernel_id: str) -> str | None:
        """The kernel's ``execution_state`` as the gateway sees it; None: no such kernel."""
        model = await self._request("GET", f"/api/kernels/{kernel_id}", allow=404)
        if not isinstance(model, dict):
            return None
        return str(model.get("execution_state") or "unknown")

    async def interrupt(self, kernel_id: str) -> None:
        await self._request("POST", f"/api/kernels/{kernel_id}/interrupt", allow=404)

    async def restart(self, kernel_id: str) -> None:
        await self._request("POST", f"/api/kernels/{kernel_id}/restart")

    async def delete(self, kernel_id: str) -> None:
        await self._request("DELETE", f"/api/kernels/{kernel_id}", allow=404)

    async def connect(self, kernel_id: str) -> GatewaySocket:
        """The kernel's channels websocket (JSON messages with a ``channel`` field)."""
        scheme = "wss" if self.url.startswith("https") else "ws"
        base = scheme + self.url[self.url.index(":") :]
        request = HTTPRequest(
            f"{base}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
            headers=self._headers(),
            connect_timeout=20.0,
            request_timeout=REQUEST_TIMEOUT,
        )
        try:
            connection = await websocket_connect(request, max_message_size=self._max_message_bytes)
        except HTTPClientError as exc:
            raise self._refused(exc.code, exc.response.body if exc.response else b"") from None
        except OSError as exc:
            raise KernelError(
                f"RLM_KERNEL_GATEWAY: cannot reach {self.shown}: {exc.strerror or exc}"
            ) from None
        return GatewaySocket(connection)


RLMErrorType = ConfigError | KernelError
