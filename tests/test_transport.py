"""Model requests without the SDK (rlm.agent.transport): what goes on the wire, and failures
that still end as exactly the exception the OpenAI SDK would have raised.

Each failure is produced twice against the same real endpoint, once through rlm's transport
and once through ``openai.AsyncOpenAI`` itself, and the two exceptions are compared: the SDK's
exception tree is the error contract (rlm.agent.retry classifies it, users catch it).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from rlm.agent.model import ModelClient
from rlm.agent.transport import Transport, chat_url, http_library_name
from rlm.config import load_settings
from scripted_model import ScriptedModel, fault, raw, reply

MESSAGES = [{"role": "user", "content": "hi"}]


async def _through_rlm(base_url: str, timeout: float = 30.0) -> BaseException:
    transport = Transport(base_url, "sk-test", timeout)
    try:
        async with transport.post({"model": "m", "messages": MESSAGES}, {}):
            pass
    except BaseException as exc:
        return exc
    finally:
        await transport.aclose()
    raise AssertionError("the request did not fail")


async def _through_sdk(base_url: str, timeout: float = 30.0) -> BaseException:
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="sk-test", max_retries=0, timeout=timeout
    )
    try:
        await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    except BaseException as exc:
        return exc
    finally:
        await client.close()
    raise AssertionError("the request did not fail")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": {"message": "bad stream field", "type": "invalid_request_error"}}),
        (401, {"error": {"message": "no key"}}),
        (404, "not found here"),
        (422, {"detail": "unprocessable"}),
        (429, {"error": {"message": "slow down", "code": "rate_limit"}}),
        (418, {"message": "teapot"}),
        (503, ""),
    ],
)
async def test_a_status_error_is_the_sdks_own_exception(
    model: ScriptedModel, status: int, body: Any
) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    model.script(fault(status, body=data), fault(status, body=data))
    ours = await _through_rlm(model.base_url)
    theirs = await _through_sdk(model.base_url)
    assert type(ours) is type(theirs)
    assert isinstance(ours, openai.APIStatusError) and isinstance(theirs, openai.APIStatusError)
    assert (str(ours), ours.status_code, ours.body) == (
        str(theirs),
        theirs.status_code,
        theirs.body,
    )
    assert ours.response.text == theirs.response.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_is_the_sdks_connection_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    ours, theirs = await _through_rlm(url), await _through_sdk(url)
    assert type(ours) is type(theirs) is openai.APIConnectionError
    assert str(ours) == str(theirs)
    assert type(ours.__cause__) is type(theirs.__cause__)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"


async def test_a_timeout_is_the_sdks_timeout_error(silent_server: str) -> None:
    ours = await _through_rlm(silent_server, timeout=0.2)
    theirs = await _through_sdk(silent_server, timeout=0.2)
    assert type(ours) is type(theirs) is openai.APITimeoutError
    assert str(ours) == str(theirs)


async def test_a_request_carries_what_the_sdk_sends(model: ScriptedModel, rlm_env: Any) -> None:
    model.script(reply("ours"), reply("theirs"))
    client = ModelClient(load_settings())
    try:
        await client.complete(MESSAGES, [], "scripted")
    finally:
        await client.close()
    sdk = openai.AsyncOpenAI(base_url=model.base_url, api_key=load_settings().key)
    try:
        await sdk.chat.completions.create(model="scripted", messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        await sdk.close()
    ours, theirs = model.headers
    for name in ("authorization", "content-type", "accept", "host"):
        assert ours[name] == theirs[name], name
    assert ours["user-agent"] == theirs["user-agent"]
    assert ours["x-rlm-depth"] == "0"
    assert model.requests[0]["model"] == model.requests[1]["model"] == "scripted"
    assert model.requests[0]["messages"] == model.requests[1]["messages"]


def test_the_http_library_is_the_one_the_installed_sdk_sends_with() -> None:
    client = openai.AsyncOpenAI(api_key="sk-test")
    # The SDK subclasses the library's AsyncClient: the first class of its own library.
    (library, *_) = (
        c.__module__.partition(".")[0]
        for c in type(client._client).__mro__
        if not c.__module__.startswith("openai")
    )
    assert library == http_library_name()


@pytest.mark.parametrize(
    ("base_url", "url"),
    [
        (None, "https://api.openai.com/v1/chat/completions"),
        ("http://h:1/v1", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
    ],
)
def test_the_url_is_joined_as_the_sdk_joins_it(base_url: str | None, url: str) -> None:
    assert chat_url(base_url) == url
    sdk = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url)
    assert str(sdk._client.build_request("POST", sdk._prepare_url("chat/completions")).url) == url


COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "tls"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class _Completion(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTPS endpoint with a self-signed certificate: ``(base URL, certificate file)``."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Completion)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1", cert_file
    finally:
        server.shutdown()
        server.server_close()


async def test_an_https_endpoint_is_verified_as_the_sdk_verifies_it(
    tls_endpoint: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_endpoint
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ours, theirs = await _through_rlm(url), await _through_sdk(url)
    assert type(ours) is type(theirs) is openai.APIConnectionError
    assert "CERTIFICATE_VERIFY_FAILED" in repr(ours.__cause__)
    # Trusted through the variable the SDK's library reads, the same endpoint answers.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    transport = Transport(url, "sk-test", 30.0)
    try:
        async with transport.post({"model": "m", "messages": MESSAGES}, {}) as response:
            assert json.loads(await response.aread())["choices"][0]["message"]["content"] == "tls"
    finally:
        await transport.aclose()


async def test_a_redirect_from_http_to_https_is_followed_and_verified(
    model: ScriptedModel, tls_endpoint: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_endpoint
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    model.script(raw(b"", status=307, headers={"Location": f"{url}/chat/completions"}))
    transport = Transport(model.base_url, "sk-test", 30.0)
    try:
        async with transport.post({"model": "m", "messages": MESSAGES}, {}) as response:
            assert str(response.url).startswith("https://")
            assert json.loads(await response.aread())["choices"][0]["message"]["content"] == "tls"
    finally:
        await transport.aclose()


async def test_a_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scripted server stands in for the proxy: a proxied request reaches it with the
    # endpoint's absolute URL (which it answers 404); an unproxied one fails to resolve.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with ScriptedModel() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.rsplit("/v1", 1)[0])
        error = await _through_rlm("http://model.invalid/v1")
        assert isinstance(error, openai.NotFoundError), repr(error)
        assert "http://model.invalid/v1/chat/completions" in str(proxy.errors)
