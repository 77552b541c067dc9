"""MCP servers as kernel functions: every tool of every configured server, in every kernel.

``RLM_MCP_CONFIG`` (``--mcp-config``, ``mcp_config=`` of ``rlm.run`` / ``rlm.Session``) names
a JSON file of the common shape ``{"mcpServers": {name: {command, args, env} | {url}}}``.
The orchestrator starts each server **once per run** (a subprocess over stdio, or a
streamable-HTTP endpoint) with the official ``mcp`` client and lists its tools. Each server
becomes an object of every kernel of the tree named after it, with one async method per tool:
``await time.get_current_time(timezone="UTC")``. A call travels as a host-function request
(:mod:`rlm.runtime.functions`: the same signed control channel, cell check, log line and
event), so the server's credentials (its ``env``, its URL) never reach a kernel.

A server that fails to start, crashes, or does not answer within ``RLM_MCP_TIMEOUT`` never
stops the run: the cell that calls it gets ``rlm.FunctionError`` saying what happened, and
the system prompt says which servers are unavailable.

Each server lives in its own task: the ``mcp`` client holds anyio cancel scopes, which must
be entered and left by the same task, while a run's start and end may happen in different
tasks (an ACP session is opened by one request and closed by another).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rlm.runtime.functions import HostFunction, HostFunctions
from rlm.runtime.mcp_config import (
    HttpServer,
    McpConfig,
    StdioServer,
    kernel_name,
    load_mcp_config,
    tool_signature,
)

__all__ = ["McpConfig", "McpServers", "load_mcp_config"]  # the config, re-exported

#: Seconds a server gets to shut down cleanly at the end of a run (then it is cancelled).
_STOP_TIMEOUT = 5.0
#: Characters of a tool's input schema shown by ``help()`` (the rest is cut).
_SCHEMA_SHOWN = 4000


class MCPServerError(Exception):
    """The server is not there: it failed to start, or stopped (crashed, disconnected)."""


class MCPTimeout(Exception):
    """The server did not answer within ``RLM_MCP_TIMEOUT``."""


class MCPToolError(Exception):
    """The tool ran and reported an error, or the server refused the call."""


class _Server:
    """One configured server: its task, its client, its tools, or why it is unavailable."""

    def __init__(
        self,
        name: str,
        spec: StdioServer | HttpServer,
        timeout: float,
        start_timeout: float,
    ) -> None:
        self.name = name
        self.attr = kernel_name(name) or name
        self.spec = spec
        self.timeout = timeout
        self.start_timeout = start_timeout
        #: Where a stdio server's stderr goes (``$RLM_HOME/mcp/<name>.log``), so its logging
        #: never mixes with rlm's progress on the terminal.
        self.log_path: Path | None = None
        self._errlog: Any = None
        self.error: str | None = None
        self.description = ""
        self.tools: list[Any] = []
        self._client: Any = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _target(self) -> Any:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        spec = self.spec
        if isinstance(spec, HttpServer):
            return _http(spec.url, spec.headers) if spec.headers else spec.url
        params = StdioServerParameters(
            command=spec.command, args=spec.args, env=spec.env or None, cwd=spec.cwd
        )
        # the server's stderr is its log (stdout is the protocol's)
        errlog: Any = sys.stderr
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                errlog = self._errlog = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        return stdio_client(params, errlog=errlog)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name=f"rlm-mcp-{self.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.start_timeout)
        except asyncio.TimeoutError:
            self.error = f"did not start within {self.start_timeout:g}s (RLM_MCP_START_TIMEOUT)"
            await self.stop()

    async def _serve(self) -> None:
        from mcp import Client

        try:
            async with Client(self._target(), read_timeout_seconds=self.timeout) as client:
                tools: list[Any] = []
                cursor = None
                while True:
                    listed = await client.list_tools(cursor=cursor)
                    tools.extend(listed.tools)
                    cursor = listed.next_cursor
                    if not cursor:
                        break
                self.tools = tools
                info = client.server_info
                self.description = (client.instructions or "").strip() or (
                    f"{info.name} {info.version}" if info is not None else ""
                )
                self._client = client
                self._ready.set()
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an ExceptionGroup from the client's task group too
            if self.error is None:
                hint = await asyncio.to_thread(self._log_hint)
                self.error = f"failed to start: {_describe_error(exc)}{hint}"
        finally:
            self._client = None
            if self._errlog is not None:
                self._errlog.close()
            if self.error is None:
                self.error = "stopped"
            self._ready.set()

    def _log_hint(self) -> str:
        if self.log_path is None or not isinstance(self.spec, StdioServer):
            return ""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 2000))
                tail = handle.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        last = tail[-1].strip()[:300] if tail else ""
        return f" (its log {self.log_path} ends: {last})" if last else f" (log: {self.log_path})"

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT)
        except (asyncio.TimeoutError, Exception):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        client = self._client
        if client is None:
            raise MCPServerError(f"MCP server {self.name!r} is unavailable: {self.error}")
        try:
            result = await asyncio.wait_for(client.call_tool(tool, arguments), self.timeout)
        except asyncio.TimeoutError:
            raise MCPTimeout(
                f"MCP server {self.name!r} did not answer within {self.timeout:g}s "
                "(RLM_MCP_TIMEOUT)"
            ) from None
        except Exception as exc:
            from mcp.shared.exceptions import MCPError

            if isinstance(exc, MCPError) and not _closed(exc):
                raise MCPToolError(exc.error.message) from None
            # the connection is gone (the process exited, the endpoint went away)
            self.error = f"stopped: {_describe_error(exc)}"
            self._client = None
            self._stop.set()
            raise MCPServerError(f"MCP server {self.name!r} {self.error}") from None
        text = "\n".join(_content_text(block) for block in result.content)
        if result.is_error:
            raise MCPToolError(text or "the tool reported an error")
        if result.structured_content is not None:
            return result.structured_content
        return text


@contextlib.asynccontextmanager
async def _http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """Streamable HTTP with the server's headers on every request (an HTTP client of our
    own, closed with the connection; the timeouts are the mcp transport's defaults)."""
    import httpx2  # the mcp client's own HTTP library
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams


def _closed(exc: Exception) -> bool:
    """Whether an ``MCPError`` says the connection is gone (not that the call failed)."""
    from mcp_types import CONNECTION_CLOSED

    return getattr(getattr(exc, "error", None), "code", None) == CONNECTION_CLOSED


def _describe_error(exc: BaseException) -> str:
    """The innermost message of an exception (groups from anyio task groups unwrapped)."""
    while getattr(exc, "exceptions", None):  # an exception group of a task group
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    from mcp.shared.exceptions import MCPError

    message = exc.error.message if isinstance(exc, MCPError) else str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _content_text(block: Any) -> str:
    text = getattr(block, "text", None)
    if isinstance(text, str):
        return text
    resource = getattr(block, "resource", None)
    if resource is not None and isinstance(getattr(resource, "text", None), str):
        return str(resource.text)
    kind = getattr(block, "type", "content")
    mime = getattr(block, "mime_type", None) or getattr(resource, "mime_type", None) or ""
    return f"[{kind} {mime}]".replace(" ]", "]")


class McpServers:
    """The MCP servers of one orchestrator: started on entry, stopped on exit."""

    def __init__(self, config: McpConfig | None, timeout: float, start_timeout: float) -> None:
        self.servers = [
            _Server(name, spec, timeout, start_timeout)
            for name, spec in (config.servers if config else {}).items()
        ]
        #: The tools as host functions named ``server.tool`` (the requests' handler).
        self.functions = HostFunctions()
        self._specs: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.servers)

    def set_log_dir(self, path: Path | None) -> None:
        """Send each stdio server's stderr to ``path/<name>.log`` (None: to rlm's stderr)."""
        for server in self.servers:
            server.log_path = path / f"{server.name}.log" if path is not None else None

    async def __aenter__(self) -> McpServers:
        await asyncio.gather(*(server.start() for server in self.servers))
        for server in self.servers:
            self._register(server)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers), return_exceptions=True)

    def owns(self, name: str) -> bool:
        return name in self.functions.by_name

    def _register(self, server: _Server) -> None:
        tools = []
        for tool in server.tools if server.error is None else []:
            attr = kernel_name(tool.name)
            if attr is None:
                continue  # a name no Python attribute can have ("_x", "class")
            signature = tool_signature(tool.input_schema)
            doc = _tool_doc(tool)
            function = _caller(server, tool.name, signature)
            full = f"{server.attr}.{attr}"
            self.functions.by_name[full] = HostFunction(
                full, function, function, str(signature), doc
            )
            tools.append({"name": attr, "signature": str(signature), "doc": doc})
        self._specs.append(
            {
                "name": server.attr,
                "doc": server.description,
                "error": server.error,
                "tools": tools,
            }
        )

    def bootstrap_source(self) -> str:
        if not self._specs:
            return ""
        return f"import rlm.inkernel.mcp\nrlm.inkernel.mcp.install({json.dumps(self._specs)!r})\n"

    def prompt_section(self) -> str:
        if not self._specs:
            return ""
        lines = []
        for spec in self._specs:
            if spec["error"]:
                lines.append(f"- `{spec['name']}`: unavailable ({spec['error']})")
                continue
            lines.append(f"- `{spec['name']}`" + (f": {spec['doc']}" if spec["doc"] else ""))
            for tool in spec["tools"]:
                summary = tool["doc"].strip().splitlines()[0] if tool["doc"].strip() else ""
                lines.append(
                    f"  - `await {spec['name']}.{tool['name']}{tool['signature']}`"
                    + (f": {summary}" if summary else "")
                )
        return (
            "\n## MCP servers\n"
            "Each MCP server below is an object in your ipython kernel with one async method "
            "per tool; they run in the host program (keyword arguments and results as JSON: the "
            "tool's structured result, else its text) and raise `rlm.FunctionError` when they "
            "fail. `help(server.tool)` shows a tool's description and input schema.\n"
            + "\n".join(lines)
            + "\n"
        )


def _tool_doc(tool: Any) -> str:
    schema = json.dumps(tool.input_schema, indent=1, ensure_ascii=False)
    if len(schema) > _SCHEMA_SHOWN:
        schema = schema[:_SCHEMA_SHOWN] + "\n…"
    description = (tool.description or "").strip()
    return f"{description}\n\nInput schema (JSON):\n{schema}".strip()


def _caller(server: _Server, tool: str, signature: inspect.Signature) -> Any:
    """The orchestrator-side function of one tool: keyword arguments to one ``tools/call``."""

    async def call(**arguments: Any) -> Any:
        return await server.call(tool, arguments)

    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__name__ = tool
    return call
