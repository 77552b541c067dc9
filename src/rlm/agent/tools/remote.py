"""Tools that touch files follow the kernel: with a remote kernel they run through it.

With ``RLM_KERNEL_GATEWAY`` the agent's kernel runs on another machine (or in a pod), and the
files the model works on are there, not on the orchestrator's machine. So ``bash`` and
``edit`` run inside that kernel, in its working directory: a hidden cell (out of the
history) calls this module's :func:`run` in the kernel, which runs the same code the tools
run locally (``bash.run_here``, ``edit.edit_here``), and the result comes back in the execute
reply's user expressions, which the in-kernel output cap never cuts. The kernel therefore
needs rlm installed, as it does for ``rlm.run`` anyway.

Timeouts: the command's own limit applies in the kernel (the process group is killed there);
the cell gets :data:`SLACK` seconds more, after which the kernel is interrupted as any cell.
A cancelled tool call stops its cell (interrupt, or restart) before the next call.
"""

from __future__ import annotations

import ast
import asyncio
import json
from typing import TYPE_CHECKING, Any, Protocol

from rlm.errors import ToolError

if TYPE_CHECKING:
    from rlm.agent.tools.base import ToolContext

__all__ = ["SLACK", "RemoteKernel", "call", "kernel_of", "run", "take"]

#: Seconds a tool's cell may run beyond the tool's own limit before it is interrupted.
SLACK = 15.0

_MODULE = __name__
#: Kernel side: the last tool result (JSON), until :func:`take` reads it.
RESULT = ""
_SETTLING: set[asyncio.Future[None]] = set()


class RemoteKernel(Protocol):
    """What the file tools use of a remote kernel."""

    remote: bool

    async def run_hidden(self, code: str, expressions: dict[str, str], timeout: float) -> Any:
        """An ``ExecResult`` (not imported: the log readers import the tools, never the
        kernels)."""
        ...

    async def settle(self) -> None: ...


def kernel_of(ctx: ToolContext, tool: str) -> RemoteKernel | None:
    """The remote kernel the tool must run through, or None to run here."""
    kernel: Any = ctx.kernel
    if kernel is not None and getattr(kernel, "remote", False):
        return kernel  # type: ignore[no-any-return]
    if ctx.settings.kernel_gateway:
        raise ToolError(
            f"the {tool} tool runs in the agent's kernel on the kernel gateway, "
            "which is not running"
        )
    return None


async def call(kernel: RemoteKernel, tool: str, kwargs: dict[str, Any], timeout: float) -> str:
    """Orchestrator side: run ``tool`` with ``kwargs`` in ``kernel``; its text, or
    ``ToolError`` with the tool's own message."""
    module = f"__import__({_MODULE!r}, fromlist=['run'])"
    code = f"{module}.RESULT = await {module}.run({tool!r}, {kwargs!r})\n"
    try:
        result = await kernel.run_hidden(code, {"r": f"{module}.take()"}, timeout)
    except asyncio.CancelledError:
        future = asyncio.ensure_future(kernel.settle())  # stop the cell, then the kernel is free
        _SETTLING.add(future)
        future.add_done_callback(_SETTLING.discard)
        raise
    if result.status != "ok":
        detail = "; ".join(result.notes) or result.output.strip()[-1500:]
        raise ToolError(f"{tool} could not run in the remote kernel: {detail}")
    value = result.user_expressions.get("r") or {}
    try:
        payload = json.loads(ast.literal_eval(value["data"]["text/plain"]))
        ok, text = bool(payload["ok"]), str(payload["text"])
    except (KeyError, TypeError, ValueError, SyntaxError):
        raise ToolError(f"{tool}: the remote kernel sent no result") from None
    if not ok:
        raise ToolError(text)
    return text


async def run(tool: str, kwargs: dict[str, Any]) -> str:
    """Kernel side: run the tool here; ``{"ok", "text"}`` as JSON."""
    from rlm.agent.tools import bash, edit

    try:
        if tool == "bash":
            text = await bash.run_here(**kwargs)
        elif tool == "edit":
            text = edit.edit_here(**kwargs)
        else:
            raise ToolError(f"no tool {tool!r} runs in a kernel")
    except ToolError as exc:
        return json.dumps({"ok": False, "text": str(exc)})
    return json.dumps({"ok": True, "text": text})


def take() -> str:
    """Kernel side: the last result, once."""
    global RESULT
    value, RESULT = RESULT, ""
    return value
