"""A scripted, OpenAI-compatible chat-completions server for tests.

Why a real server instead of mocking the ``openai`` client: the agent code talks to models
through the real SDK (retries, streaming, SSE parsing, error mapping, pydantic validation).
Mocking the client would skip exactly the layers whose behaviour we need to trust. So the tests
run the real SDK against real HTTP on 127.0.0.1, and this module decides what the "model" says.

Usage::

    with ScriptedModel() as model:
        model.script(reply(None, ipython("print(1 + 1)")), reply("The answer is 2."))
        client = openai.OpenAI(base_url=model.base_url, api_key="x", max_retries=0)
        ...
        assert model.errors == []

Requests are routed to queues of steps by a substring of the *first* ``user`` message (the
agent's task), so parallel sub-agents each get their own deterministic script regardless of
the order in which their requests arrive. Stdlib only (``http.server`` in a background thread).
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from personalities import Personality

__all__ = [
    "Delay",
    "Drop",
    "EmptyChoices",
    "Fault",
    "NotJson",
    "Reply",
    "ScriptedModel",
    "Step",
    "StepLike",
    "ToolCall",
    "Trickle",
    "Wait",
    "call",
    "cut_call",
    "delay",
    "drop",
    "empty_choices",
    "fault",
    "ipython",
    "newline_call",
    "not_json",
    "raw",
    "reply",
    "text_call",
    "trickle",
    "wait",
]

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
DEFAULT_COMPLETION_TOKENS = 7
DEFAULT_WAIT_TIMEOUT = 30.0


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One function tool call the scripted assistant makes.

    ``arguments`` is kept as the exact string put on the wire, so tests can send malformed JSON
    and check that the agent copes. ``id=None`` means "assign ``call_<n>`` when served": ids are
    assigned per served response (not per object) so one ``ToolCall`` can be reused in several
    steps and still get unique ids, as a real model's would be.
    """

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """A normal assistant message: optional text content plus optional tool calls.

    ``usage=None`` derives plausible numbers from the request (see ``ScriptedModel``) so cost
    and token accounting code sees realistic, request-dependent values without every test
    having to spell them out. ``finish_reason=None`` means "tool_calls" when there are tool
    calls, else "stop"; override it (e.g. "length") to test truncation handling.

    ``reasoning`` is sent as ``reasoning_content`` (as llama.cpp and vLLM do). ``chunk_delay``
    makes a slow model: a streamed reply comes one word per chunk, this many seconds apart
    (a plain reply waits as long as the stream would take).
    """

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    reasoning: str | None = None
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class Fault:
    """An HTTP error response (e.g. 500, or 429 with ``Retry-After``) to test retry/error paths."""

    status: int = 500
    body: str | bytes = '{"error": {"message": "scripted failure"}}'
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class NotJson:
    """HTTP 200 whose body is not JSON (a broken proxy / gateway), to test parsing failures.

    For streaming requests the garbage is sent as an SSE ``data:`` line instead.
    """

    body: str = "<html><body>502 Bad Gateway (not JSON)</body></html>"
    content_type: str = "application/json"


@dataclass(frozen=True)
class EmptyChoices:
    """HTTP 200 with a valid completion whose ``choices`` is empty (some gateways do this)."""


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering, to test connection-error handling.

    With ``partial=True`` the response is started (status line, headers and some of the body,
    or the first SSE chunk for streaming requests) and then cut off mid-response.
    """

    partial: bool = False


@dataclass(frozen=True)
class Wait:
    """Block this request until ``event`` is set, then serve ``then``.

    Lets a test hold a model call "in flight" deterministically, e.g. to cancel the agent while
    it waits for the model. Gives up after ``timeout`` seconds (recorded in ``errors``, since a
    test that never sets its event is buggy) and is released early when the server closes.
    """

    event: threading.Event
    then: StepLike = field(default_factory=lambda: Reply(""))
    timeout: float = DEFAULT_WAIT_TIMEOUT


@dataclass(frozen=True)
class Delay:
    """Sleep ``seconds``, then serve ``then``: a slow model (timeouts, parallel call order)."""

    seconds: float
    then: StepLike = field(default_factory=lambda: Reply(""))


@dataclass(frozen=True)
class Trickle:
    """A server that answers and then stalls: status and headers at once, then the body one
    byte every ``interval`` seconds (a hung upstream behind a proxy), to test deadlines.

    Stops when the client hangs up or the server closes.
    """

    interval: float
    body: bytes = b'{"choices": [{"message": {"role": "assistant", "content": "trickled"}}]}'


Step = Reply | Fault | NotJson | EmptyChoices | Drop | Wait | Delay | Trickle
# A callable receives the request body and returns the step to serve (dynamic responses). A bare
# str is shorthand for reply(str); a bare ToolCall for reply(None, tool_call).
StepLike = Step | ToolCall | str | Callable[[dict], Any]

_STEP_TYPES = (Reply, Fault, NotJson, EmptyChoices, Drop, Wait, Delay, Trickle, ToolCall, str)


def reply(
    content: str | None = None,
    *tool_calls: ToolCall,
    usage: tuple[int, int] | None = None,
    finish_reason: str | None = None,
    reasoning: str | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """An assistant message; ``usage`` is ``(prompt_tokens, completion_tokens)`` or derived;
    ``reasoning`` and ``chunk_delay`` as in :class:`Reply`."""
    for tc in tool_calls:
        if not isinstance(tc, ToolCall):
            raise TypeError(
                f"reply() tool calls must be ToolCall (use call()/ipython()), got {tc!r}"
            )
    return Reply(content, tuple(tool_calls), usage, finish_reason, reasoning, chunk_delay)


def call(name: str, arguments: dict | str, id: str | None = None) -> ToolCall:
    """A tool call; a ``str`` ``arguments`` is sent verbatim so malformed JSON can be tested."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return ToolCall(name, arguments, id)


def ipython(code: str, timeout: int | None = None, id: str | None = None) -> ToolCall:
    """A call of the agent's ``ipython`` tool: ``{"code": ..., "timeout": ...}`` omitting None."""
    args: dict[str, Any] = {"code": code}
    if timeout is not None:
        args["timeout"] = timeout
    return call("ipython", args, id)


def text_call(
    name: str, arguments: dict, form: Literal["hermes", "fenced", "bare"] = "hermes"
) -> Reply:
    """A tool call written as text in ``content``, as a server without a tool-call parser
    returns it (llama-server with the model's own template, vLLM without a parser)."""
    obj = json.dumps({"name": name, "arguments": arguments})
    if form == "hermes":
        return Reply(f"<tool_call>\n{obj}\n</tool_call>")
    if form == "fenced":
        return Reply(f"I will run this:\n```json\n{obj}\n```")
    return Reply(obj)


def newline_call(name: str, arguments: dict) -> ToolCall:
    """A call whose ``arguments`` have raw newlines inside JSON strings, as grammar-generated
    calls have (llama-cpp-python: multi-line code)."""
    return ToolCall(name, json.dumps(arguments).replace("\\n", "\n"))


def cut_call(name: str, arguments: dict, keep: int = 20) -> Reply:
    """A tool call cut by the token limit: the first ``keep`` characters of its arguments,
    ``finish_reason: "length"`` (llama-server at ``max_tokens`` or a full context)."""
    return Reply(None, (ToolCall(name, json.dumps(arguments)[:keep]),), finish_reason="length")


def fault(
    status: int = 500,
    body: str | bytes = '{"error": {"message": "scripted failure"}}',
    headers: dict[str, str] | None = None,
) -> Fault:
    """An HTTP error response; e.g. ``fault(429, headers={"Retry-After": "0"})``."""
    return Fault(status, body, headers)


def raw(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    gzip: bool = False,
) -> Fault:
    """Any status with any body, verbatim: ``bytes`` and ``str`` as given, anything else as
    JSON. For replies a well-behaved server would never send (``message: null``, invalid
    UTF-8, a gzip bomb with ``gzip=True``: compressed, with ``Content-Encoding: gzip``)."""
    data = (
        body
        if isinstance(body, bytes)
        else (body if isinstance(body, str) else json.dumps(body)).encode()
    )
    headers = dict(headers or {})
    if gzip:
        data = gzip_module.compress(data, compresslevel=9)
        headers["Content-Encoding"] = "gzip"
    return Fault(status, data, headers)


def trickle(interval: float, body: bytes | None = None) -> Trickle:
    """Headers now, then one byte of ``body`` every ``interval`` seconds."""
    return Trickle(interval) if body is None else Trickle(interval, body)


def not_json(
    body: str = "<html><body>502 Bad Gateway (not JSON)</body></html>",
    content_type: str = "application/json",
) -> NotJson:
    """HTTP 200 with a body that does not parse as JSON."""
    return NotJson(body, content_type)


def empty_choices() -> EmptyChoices:
    """HTTP 200 with ``choices: []``."""
    return EmptyChoices()


def drop(partial: bool = False) -> Drop:
    """Close the connection without a (complete) response."""
    return Drop(partial)


def wait(
    event: threading.Event, then: StepLike | None = None, timeout: float = DEFAULT_WAIT_TIMEOUT
) -> Wait:
    """Hold the request until ``event`` is set, then serve ``then`` (default: ``reply("")``)."""
    _check_step(then if then is not None else "")
    return Wait(event, then if then is not None else Reply(""), timeout)


def delay(seconds: float, then: StepLike | None = None) -> Delay:
    """Sleep ``seconds``, then serve ``then`` (default: ``reply("")``)."""
    _check_step(then if then is not None else "")
    return Delay(seconds, then if then is not None else Reply(""))


def _check_step(step: object) -> None:
    # Fail at script() time, in the test's own traceback, rather than later inside the server.
    if not (isinstance(step, _STEP_TYPES) or callable(step)):
        raise TypeError(f"not a scripted step: {step!r}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a str, or a list of content parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return "".join(out)
    return ""


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []


def _task_text(body: dict) -> str:
    """Content of the first ``user`` message: the routing key source (the agent's task)."""
    for m in _messages(body):
        if m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _default_prompt_tokens(body: dict) -> int:
    return max(1, sum(len(_text_of(m.get("content"))) for m in _messages(body)) // 4)


def _pieces(s: str, n: int) -> list[str]:
    """Split ``s`` into at most ``n`` non-empty pieces, so streaming exercises accumulation."""
    if not s:
        return []
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


class _ClientGone(Exception):
    """The client closed the connection while we were answering (e.g. it was cancelled)."""


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the SDK's connection pool can keep connections alive like with a real API.
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every response, which adds up over a test suite.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: per-request stderr lines would drown test output."""

    def do_POST(self) -> None:
        try:
            self.server.owner._handle(self)
        except _ClientGone:
            self.close_connection = True

    def _unknown(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.owner._error(f"unexpected request: {self.command} {self.path}")
        try:
            self.server.owner._send_json(
                self, 404, {"error": {"message": f"no route for {self.command} {self.path}"}}
            )
        except _ClientGone:
            self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _unknown


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # The default backlog of 5 makes 50+ simultaneous connects stall on SYN retransmits.
    request_queue_size = 256

    def __init__(self, owner: ScriptedModel) -> None:
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        """Shut down kept-alive connections so their handler threads end with the server."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, _ClientGone)) or self.owner._closing.is_set():
            return  # a client hanging up is not a scripting problem
        self.owner._error(f"scripted model handler crashed: {exc!r}")


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class ScriptedModel:
    """A chat-completions endpoint that answers from scripted queues of steps.

    * ``script(*steps, match=...)`` appends steps to the queue keyed by ``match``. A request is
      served from the keyed queue whose key occurs in its first ``user`` message (longest key
      wins, so "task 1" vs "task 12" can be disambiguated); ``match=None`` is the fallback queue.
    * ``requests`` lists every received JSON body in arrival order; ``requests_for(match)``
      the bodies served from one queue.
    * ``errors`` collects problems (script exhausted, no queue matched, unparsable or unexpected
      requests, a step that raised). Errors are also answered with HTTP 500/400/404 so the agent
      fails visibly, but tests should still ``assert model.errors == []``: an agent may swallow
      the HTTP error and the test would otherwise pass for the wrong reason.

    Default usage when a ``reply`` gives none: prompt_tokens = total characters of all message
    contents // 4 (at least 1), completion_tokens = 7.

    The server starts on construction; use it as a context manager or call ``close()``.
    """

    def __init__(self, personality: Personality | None = None) -> None:
        #: How a real server treats requests (see ``personalities``); None: no rules.
        self.personality = personality
        #: Answer every ``stream: true`` request with a 400 naming streaming (a server that
        #: cannot stream), consuming no step.
        self.refuse_streaming = False
        self._lock = threading.Lock()
        self._queues: dict[str | None, deque[StepLike]] = {}
        self._served: list[tuple[str | None, dict]] = []
        self._call_ids = itertools.count(1)
        self._completion_ids = itertools.count(1)
        self._closing = threading.Event()
        self._closed = False
        self.requests: list[dict] = []
        #: The HTTP headers of each request in ``requests`` (lower-case names).
        self.headers: list[dict[str, str]] = []
        self.errors: list[str] = []
        self._server = _Server(self)
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # A short poll keeps close() (and so every test's teardown) fast.
            kwargs={"poll_interval": 0.01},
            name=f"ScriptedModel:{port}",
            daemon=True,
        )
        self._thread.start()

    # ---------------------------------------------------------------- public API

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ScriptedModel({self.base_url!r})"

    def script(self, *steps: StepLike, match: str | None = None) -> None:
        """Append ``steps`` to the queue for ``match`` (None: the default queue).

        Routing by the first user message (rather than by arrival order) keeps concurrent
        sub-agents deterministic: each sub-agent's task text selects its own queue.
        """
        if match == "":
            raise ValueError("match='' would match every request; use match=None for the default")
        for step in steps:
            _check_step(step)
        with self._lock:
            self._queues.setdefault(match, deque()).extend(steps)

    def requests_for(self, match: str | None) -> list[dict]:
        """Bodies of the requests that were served a step from the queue keyed by ``match``."""
        with self._lock:
            return [body for key, body in self._served if key == match]

    def pending(self, match: str | None = None) -> int:
        """How many steps of that queue are still unconsumed (to assert a script ran out)."""
        with self._lock:
            return len(self._queues.get(match, ()))

    def close(self) -> None:
        """Stop the server, release any ``wait``/``delay`` in progress, drop open connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)

    # ---------------------------------------------------------------- internals

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _route(self, body: dict) -> tuple[str | None, StepLike | None, str | None]:
        """Pick (queue key, step, error message) for a request, consuming the step."""
        task = _task_text(body)
        with self._lock:
            keys = [k for k in self._queues if k is not None and k in task]
            key = max(keys, key=len) if keys else None
            queue = self._queues.get(key)
            if queue is None:
                known = sorted(k for k in self._queues if k is not None)
                return (
                    None,
                    None,
                    (
                        f"no scripted queue matches request #{len(self.requests)} "
                        f"(first user message {task[:120]!r}; keyed queues {known!r}; "
                        "no default queue)"
                    ),
                )
            if not queue:
                return (
                    key,
                    None,
                    (
                        f"script exhausted for queue match={key!r} "
                        f"at request #{len(self.requests)} "
                        f"(first user message {task[:120]!r})"
                    ),
                )
            step = queue.popleft()
            self._served.append((key, body))
            return key, step, None

    def _handle(self, h: _Handler) -> None:
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if len(raw) < length:
            # The client went away before its body arrived (a cancelled call: the cell or
            # the batch was cancelled while the request was being sent): nothing to answer.
            h.close_connection = True
            return
        if path != CHAT_COMPLETIONS_PATH:
            self._error(f"unexpected request: POST {h.path}")
            self._send_json(h, 404, {"error": {"message": f"no route for POST {h.path}"}})
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("request body is not a JSON object")
        except ValueError as exc:
            msg = f"unparsable request body ({exc}): {raw[:200]!r}"
            self._error(msg)
            self._send_json(h, 400, {"error": {"message": msg, "type": "invalid_request_error"}})
            return
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
        refusal = self.personality.refuse(body) if self.personality else None
        if refusal is None and self.refuse_streaming and body.get("stream"):
            error = {"message": "stream is not supported", "type": "invalid_request_error"}
            refusal = 400, {"error": error}
        if refusal is not None:  # the server's own rules come before the script
            self._send_json(h, *refusal)
            return
        _key, step, problem = self._route(body)
        if problem is not None:
            self._error(problem)
            self._send_json(h, 500, {"error": {"message": problem, "type": "scripted_model_error"}})
            return
        self._serve(h, body, step)

    def _serve(self, h: _Handler, body: dict, step: StepLike, depth: int = 0) -> None:
        if depth > 20:
            self._fail(h, "step nesting too deep (a callable returning callables?)")
            return
        if isinstance(step, str):
            step = Reply(step)
        elif isinstance(step, ToolCall):
            step = Reply(None, (step,))
        elif not isinstance(step, _STEP_TYPES) and callable(step):
            try:
                produced = step(body)
            except Exception as exc:
                self._fail(h, f"callable step {step!r} raised {exc!r}")
                return
            if not (isinstance(produced, _STEP_TYPES) or callable(produced)):
                self._fail(h, f"callable step {step!r} returned a non-step {produced!r}")
                return
            self._serve(h, body, produced, depth + 1)
            return

        stream = bool(body.get("stream"))
        if isinstance(step, Reply) and self.personality and self.personality.hides_tools(body):
            # The model never saw the tools, so it cannot call them: it answers in words.
            step = Reply(step.content or "I cannot run code here.", (), step.usage)
        if isinstance(step, Reply):
            if stream:
                self._send_stream(h, body, step)
            else:
                if step.chunk_delay:
                    words = _words(step.content or "") + _words(step.reasoning or "")
                    self._closing.wait(step.chunk_delay * (len(words) + 2))
                self._send_json(h, 200, self._completion(body, step))
        elif isinstance(step, Fault):
            data = step.body.encode() if isinstance(step.body, str) else step.body
            self._send_raw(h, step.status, data, "application/json", step.headers)
        elif isinstance(step, NotJson):
            if stream:
                self._send_sse(h, [f"data: {step.body}\n\n"])
            else:
                self._send_raw(h, 200, step.body.encode(), step.content_type)
        elif isinstance(step, EmptyChoices):
            completion = self._completion(body, Reply(""))
            completion["choices"] = []
            if stream:
                completion["object"] = "chat.completion.chunk"
                self._send_sse(h, [_sse(completion), "data: [DONE]\n\n"])
            else:
                self._send_json(h, 200, completion)
        elif isinstance(step, Drop):
            self._drop(h, body, step)
        elif isinstance(step, Wait):
            deadline = time.monotonic() + step.timeout
            while not step.event.wait(0.02):
                if self._closing.is_set():
                    break
                if time.monotonic() >= deadline:
                    self._error(f"wait(): event not set within {step.timeout} s")
                    break
            self._serve(h, body, step.then, depth + 1)
        elif isinstance(step, Delay):
            self._closing.wait(step.seconds)
            self._serve(h, body, step.then, depth + 1)
        elif isinstance(step, Trickle):
            self._trickle(h, step)
        else:  # pragma: no cover - _check_step prevents this
            self._fail(h, f"not a scripted step: {step!r}")

    def _fail(self, h: _Handler, message: str) -> None:
        self._error(message)
        self._send_json(h, 500, {"error": {"message": message, "type": "scripted_model_error"}})

    # ---------------------------------------------------------------- response bodies

    def _usage(self, body: dict, step: Reply) -> dict[str, int]:
        if step.usage is not None:
            prompt, completion = step.usage
        else:
            prompt, completion = _default_prompt_tokens(body), DEFAULT_COMPLETION_TOKENS
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _resolve_calls(self, step: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": tc.id if tc.id is not None else f"call_{next(self._call_ids)}",
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments},
            }
            for tc in step.tool_calls
        ]

    @staticmethod
    def _finish_reason(step: Reply) -> str:
        if step.finish_reason is not None:
            return step.finish_reason
        return "tool_calls" if step.tool_calls else "stop"

    def _header(self, body: dict, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-scripted-{next(self._completion_ids)}",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model") or "scripted-model",
            "system_fingerprint": None,
        }

    def _completion(self, body: dict, step: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.content, "refusal": None}
        if step.reasoning is not None:
            message["reasoning_content"] = step.reasoning
        calls = self._resolve_calls(step)
        if calls:
            message["tool_calls"] = calls
        return {
            **self._header(body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason(step),
                }
            ],
            "usage": self._usage(body, step),
        }

    def _chunks(self, body: dict, step: Reply) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed reply, as OpenAI sends them."""
        head = self._header(body, "chat.completion.chunk")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            c = {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                c["usage"] = None
            return c

        out = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if step.chunk_delay:  # a slow model: a word at a time
            out += [chunk({"reasoning_content": word}) for word in _words(step.reasoning or "")]
            out += [chunk({"content": word}) for word in _words(step.content or "")]
        else:
            out += [chunk({"reasoning_content": p}) for p in _pieces(step.reasoning or "", 3)]
            out += [chunk({"content": piece}) for piece in _pieces(step.content or "", 3)]
        for index, tc in enumerate(self._resolve_calls(step)):
            fn = tc["function"]
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": tc["id"],
                                "type": "function",
                                "function": {"name": fn["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            out += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _pieces(fn["arguments"], 2)
            ]
        out.append(chunk({}, self._finish_reason(step)))
        if include_usage:
            out.append({**head, "choices": [], "usage": self._usage(body, step)})
        return out

    # ---------------------------------------------------------------- wire

    def _send_json(self, h: _Handler, status: int, obj: Any) -> None:
        self._send_raw(h, status, json.dumps(obj).encode(), "application/json")

    def _send_raw(
        self,
        h: _Handler,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        headers = dict(headers or {})
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _start_sse(self, h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

    @staticmethod
    def _write_chunk(h: _Handler, text: str) -> None:
        data = text.encode()
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send_sse(self, h: _Handler, events: Iterable[str]) -> None:
        try:
            self._start_sse(h)
            for event in events:
                self._write_chunk(h, event)
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _send_stream(self, h: _Handler, body: dict, step: Reply) -> None:
        events = [*(_sse(c) for c in self._chunks(body, step)), "data: [DONE]\n\n"]
        if not step.chunk_delay:
            self._send_sse(h, events)
            return
        try:  # a slow model: each chunk on the wire on its own, then a pause
            self._start_sse(h)
            for event in events:
                self._write_chunk(h, event)
                h.wfile.flush()
                if self._closing.wait(step.chunk_delay):
                    break
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _trickle(self, h: _Handler, step: Trickle) -> None:
        h.close_connection = True
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(step.body)))
            h.end_headers()
            h.wfile.flush()
            for i in range(len(step.body)):
                if self._closing.wait(step.interval):
                    return
                h.wfile.write(step.body[i : i + 1])
                h.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _drop(self, h: _Handler, body: dict, step: Drop) -> None:
        h.close_connection = True
        if step.partial:
            try:
                if body.get("stream"):
                    self._start_sse(h)
                    self._write_chunk(h, _sse(self._chunks(body, Reply("partial"))[0]))
                else:
                    data = json.dumps(self._completion(body, Reply("partial"))).encode()
                    h.send_response(200)
                    h.send_header("Content-Type", "application/json")
                    h.send_header("Content-Length", str(len(data)))
                    h.end_headers()
                    h.wfile.write(data[: len(data) // 2])
                h.wfile.flush()
            except OSError as exc:
                raise _ClientGone from exc
        # Returning with close_connection set makes socketserver shut the socket down now.


def _words(text: str) -> list[str]:
    """``text`` in pieces of one word each, spaces kept (joined they give ``text`` back)."""
    return re.findall(r"\s*\S+\s*", text) if text.strip() else ([text] if text else [])


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"
