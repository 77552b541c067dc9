"""The kernel side of rlm: what ``import rlm`` means inside an agent's kernel.

``setup()`` runs once when the kernel starts. It takes the control address, agent id and
secret out of the environment (so ``!commands`` don't inherit the secret) and makes
``asyncio.run`` usable in a cell: ipykernel already runs an event loop in the kernel's main
thread, where the stock ``asyncio.run`` refuses to start another, so inside a running loop
the coroutine runs to completion on a fresh loop in a helper thread while the cell waits.
An interrupt (timeout, Ctrl-C) cancels that coroutine, which cancels its sub-agents.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import threading
from collections.abc import Coroutine
from typing import Any

from .control import ControlClient
from .errors import AgentError, ConfigError, DepthLimitError, RLMError

__all__ = ["active", "load_inputs", "run", "setup"]

_state: dict[str, Any] = {}
_original_asyncio_run = asyncio.run
_ERRORS: dict[str, type[RLMError]] = {
    "AgentError": AgentError,
    "DepthLimitError": DepthLimitError,
    "ConfigError": ConfigError,
}


def active() -> bool:
    """True inside a kernel started by an rlm orchestrator."""
    return bool(_state) or "RLM_CONTROL_ADDR" in os.environ


def setup() -> None:
    if _state:
        return
    _state["address"] = os.environ.pop("RLM_CONTROL_ADDR")
    _state["agent_id"] = os.environ.pop("RLM_AGENT_ID")
    _state["secret"] = os.environ.pop("RLM_AGENT_SECRET")
    _state["depth"] = int(os.environ.get("RLM_DEPTH", "0"))
    _state["max_depth"] = int(os.environ.get("RLM_MAX_DEPTH", "0"))
    asyncio.run = _run_anywhere  # type: ignore[assignment]


def _client() -> ControlClient:
    if not _state:
        setup()
    return ControlClient(_state["address"], _state["agent_id"], _state["secret"])


def _run_anywhere(main: Coroutine[Any, Any, Any], *, debug: bool | None = None) -> Any:
    """``asyncio.run`` that also works where a loop is already running (a kernel cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _original_asyncio_run(main, debug=debug)
    box: dict[str, Any] = {}
    started = threading.Event()

    async def wrapper() -> Any:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await main

    def target() -> None:
        try:
            box["result"] = _original_asyncio_run(wrapper(), debug=debug)
        except BaseException as exc:
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=target, name="rlm-asyncio-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.05)
    except KeyboardInterrupt:
        started.wait()
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _describe(value: Any, data: bytes) -> tuple[str, str]:
    kind = type(value).__name__
    try:
        size = f"{len(value):,} items" if not isinstance(value, (str, bytes)) else None
    except TypeError:
        size = None
    if isinstance(value, str):
        size = f"{len(value):,} characters"
    elif isinstance(value, bytes):
        size = f"{len(value):,} bytes"
    return kind, size or f"{len(data):,} bytes pickled"


def pack_inputs(inputs: dict[str, Any] | None) -> tuple[list[dict[str, str]], list[bytes]]:
    """Pickle each input; describe it by name, type and size (the content stays out)."""
    infos, blobs = [], []
    for name, value in (inputs or {}).items():
        if not name.isidentifier():
            raise ConfigError(f"inputs: {name!r} is not a valid Python variable name")
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        kind, size = _describe(value, data)
        infos.append({"name": name, "type": kind, "size": size})
        blobs.append(data)
    return infos, blobs


async def run(
    task: str,
    *,
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    max_turns: int | None = None,
    tools: list[str] | str | None = None,
) -> str:
    """Ask the orchestrator for a sub-agent and wait for its answer."""
    depth, max_depth = _state.get("depth", 0), _state.get("max_depth", 0)
    if depth + 1 > max_depth:
        raise DepthLimitError(
            f"no sub-agent allowed here: this agent is at depth {depth} and RLM_MAX_DEPTH is "
            f"{max_depth}"
        )
    infos, blobs = pack_inputs(inputs)
    if isinstance(tools, (list, tuple)):
        tools = ",".join(tools)
    content = {
        "task": task,
        "inputs": infos,
        "model": model,
        "max_turns": max_turns,
        "tools": tools,
    }
    reply, _ = await _client().request("run_request", content, blobs)
    if reply.get("status") == "ok":
        return str(reply["answer"])
    error = _ERRORS.get(str(reply.get("error_type")), RLMError)
    message = str(reply.get("message", "sub-agent failed"))
    if error is AgentError:
        raise AgentError(
            message,
            reason=str(reply.get("reason", "error")),
            session_path=reply.get("session_path"),
        )
    raise error(message)


async def load_inputs() -> list[str]:
    """Fetch this agent's inputs and define them as variables of the user namespace."""
    reply, blobs = await _client().request("inputs_request", {})
    names = [info["name"] for info in reply.get("inputs", [])]
    values = {name: pickle.loads(blob) for name, blob in zip(names, blobs, strict=True)}
    main = sys.modules["__main__"].__dict__
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            main = shell.user_ns
    except ImportError:
        pass
    main.update(values)
    return names
