"""An MCP server for tests, built with the ``mcp`` package's own server side.

``python mcp_fake_server.py`` serves stdio; ``--http`` serves streamable HTTP on a free port
of 127.0.0.1 and prints ``PORT <n>`` on stdout once it listens. Its tools let a test make it
echo, read its own environment, crash (the process exits mid-call) and hang.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("fake", instructions="A fake server for tests.")


@server.tool()
def echo(text: str, times: int = 2) -> str:
    """Repeat ``text``."""
    return text * times


@server.tool()
def env(name: str) -> str:
    """The value of one environment variable of the server process."""
    return os.environ.get(name, "<unset>")


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of one HTTP header of this request (HTTP only)."""
    return (ctx.headers or {}).get(name, "<unset>")


@server.tool()
def crash() -> str:
    """Exit the server process at once, mid-call."""
    os._exit(3)


@server.tool()
async def hang(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "woke"


def serve_http() -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # Listening before the port is announced: uvicorn listens only once it serves, and a
    # client connecting in between was refused (a test's MCP server "failed to start").
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    if "--http" in sys.argv:
        serve_http()
    else:
        server.run()
