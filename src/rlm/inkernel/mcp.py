"""MCP servers inside a kernel: ``await time.get_current_time(timezone="UTC")``.

The bootstrap calls :func:`install` with each server's kernel name, description, tools
(name, signature text, docstring) and, for a server that could not start, the reason. Each
server becomes an object of the user namespace whose class holds one async method per tool,
so ``help(time)`` lists the tools and ``help(time.get_current_time)`` shows one tool's
description and input schema. A call is a host-function request named ``server.tool``
(:mod:`rlm.inkernel.functions`); the server itself runs in the orchestrator.
"""

from __future__ import annotations

import json
from typing import Any

from rlm.errors import FunctionError
from rlm.inkernel import functions

__all__ = ["McpServer", "install"]


class McpServer:
    """An MCP server of the host program; its tools are this object's async methods."""

    _name = ""
    _error: str | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._error:
            raise FunctionError(f"MCP server {self._name!r} is unavailable: {self._error}")
        tools = ", ".join(sorted(n for n in type(self).__dict__ if not n.startswith("_")))
        raise AttributeError(
            f"MCP server {self._name!r} has no tool {attr!r} (its tools: {tools or 'none'})"
        )

    def __repr__(self) -> str:
        if self._error:
            return f"<MCP server {self._name}: unavailable ({self._error})>"
        tools = [n for n in type(self).__dict__ if not n.startswith("_")]
        return f"<MCP server {self._name}: {', '.join(tools) or 'no tools'}>"


def _tool(server: str, name: str, signature: str, doc: str) -> Any:
    full = f"{server}.{name}"

    async def tool(*args: Any, **kwargs: Any) -> Any:
        return await functions.call(full, args, kwargs)

    tool.__name__ = name
    tool.__qualname__ = full
    tool.__doc__ = doc or None
    functions.show_signature(tool, name, signature)
    return tool


def install(specs: str) -> None:
    """Define one object per server of ``specs`` (JSON) in the user namespace."""
    from IPython import get_ipython

    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else {}
    for spec in json.loads(specs):
        members: dict[str, Any] = {
            "__doc__": spec.get("doc") or f"MCP server {spec['name']}",
            "_name": spec["name"],
            "_error": spec.get("error"),
        }
        for tool in spec.get("tools", []):
            members[tool["name"]] = staticmethod(
                _tool(spec["name"], tool["name"], tool["signature"], tool["doc"])
            )
        namespace[spec["name"]] = type(spec["name"], (McpServer,), members)()
