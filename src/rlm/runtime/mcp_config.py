"""The MCP config file and tool schemas as rlm sees them (pure data, no servers started).

``{"mcpServers": {name: {command, args, env, cwd} | {url, headers}}}``: the common shape
of MCP client configs (other keys such as ``type`` are ignored). :func:`load_mcp_config`
checks it once, at start, so a bad file is one ``ConfigError`` line (exit 2); names become
kernel identifiers by :func:`kernel_name`; :func:`tool_signature` turns a tool's JSON input
schema into the keyword-only signature its kernel method shows.
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlm.errors import ConfigError

__all__ = [
    "HttpServer",
    "McpConfig",
    "StdioServer",
    "kernel_name",
    "load_mcp_config",
    "tool_signature",
]

#: Largest MCP config file read.
_MAX_CONFIG_BYTES = 1 << 20
#: Kernel names a server may not take.
_TAKEN = frozenset({"rlm", "asyncio"})
#: JSON schema types as the annotations a stub shows.
_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list",
    "object": "dict",
    "null": "None",
}


class StdioServer(BaseModel):
    """A server run as a subprocess of the orchestrator, spoken to over its stdin/stdout."""

    model_config = ConfigDict(extra="ignore")
    command: str = Field(min_length=1)
    args: list[str] = []
    env: dict[str, str] = {}
    """Extra environment of the server (its credentials): it stays in the orchestrator."""
    cwd: str | None = None


class HttpServer(BaseModel):
    """A server reached over streamable HTTP."""

    model_config = ConfigDict(extra="ignore")
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}


class McpConfig(BaseModel):
    """The config file: ``{"mcpServers": {name: server}}``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    servers: dict[str, StdioServer | HttpServer] = Field(alias="mcpServers")


def load_mcp_config(source: Path | str | dict[str, Any] | McpConfig) -> McpConfig:
    """The servers of a config file (or of the same shape given as a dict); every problem is
    one ``ConfigError`` line naming the file."""
    if isinstance(source, McpConfig):
        config, where = source, "mcp_config"
    elif isinstance(source, dict):
        config, where = _validate(source, "mcp_config"), "mcp_config"
    else:
        where = f"RLM_MCP_CONFIG: {str(source)!r}"
        try:
            with open(source, "rb") as handle:
                data = handle.read(_MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
        if len(data) > _MAX_CONFIG_BYTES:
            raise ConfigError(f"{where}: larger than {_MAX_CONFIG_BYTES} bytes")
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc})") from None
        config = _validate(parsed, where)
    seen: dict[str, str] = {}
    for name in config.servers:
        attr = kernel_name(name)
        if attr is None:
            raise ConfigError(
                f"{where}: server name {name!r} cannot be a kernel name (letters, digits, _ "
                "and -, not starting with a digit or _, not rlm or asyncio)"
            )
        if attr in seen:
            raise ConfigError(f"{where}: servers {seen[attr]!r} and {name!r} share a kernel name")
        seen[attr] = name
    return config


def _validate(data: Any, where: str) -> McpConfig:
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise ConfigError(f'{where}: expected {{"mcpServers": {{name: server, ...}}}}')
    try:
        return McpConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"][:2])
        raise ConfigError(
            f"{where}: {loc}: each server needs a command (stdio) or an http(s) url"
        ) from None


def kernel_name(name: str) -> str | None:
    """The kernel identifier of a server or tool name (``-`` and ``.`` become ``_``)."""
    attr = re.sub(r"[-.]", "_", name)
    if not attr.isidentifier() or keyword.iskeyword(attr) or attr.startswith("_"):
        return None
    return None if attr in _TAKEN else attr


class _Text(str):
    """Annotation text that ``inspect`` prints as it is."""

    def __repr__(self) -> str:
        return str(self)


def _annotation(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, str) and kind in _TYPES:
        return _Text(_TYPES[kind])
    if isinstance(kind, list) and all(isinstance(k, str) and k in _TYPES for k in kind):
        return _Text(" | ".join(_TYPES[k] for k in kind))
    return inspect.Parameter.empty


def tool_signature(schema: dict[str, Any]) -> inspect.Signature:
    """Keyword-only parameters from a tool's JSON schema: required ones first, optional ones
    default to their schema default (or None). Property names that are not identifiers
    make it ``(**arguments)``."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        properties = {}
    required = set(schema.get("required") or []) if isinstance(schema, dict) else set()
    if not all(
        isinstance(n, str) and n.isidentifier() and not keyword.iskeyword(n) for n in properties
    ):
        return inspect.Signature([inspect.Parameter("arguments", inspect.Parameter.VAR_KEYWORD)])
    params = []
    for name in sorted(properties, key=lambda n: n not in required):
        prop = properties[name] if isinstance(properties[name], dict) else {}
        default: Any = inspect.Parameter.empty
        if name not in required:
            default = prop.get("default")
            if not isinstance(default, (str, int, float, bool, type(None))):
                default = None
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_annotation(prop)
            )
        )
    return inspect.Signature(params)
