"""``ipython``: run code in the agent's persistent Jupyter kernel."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rlm.agent.tools.base import Tool, ToolContext, ToolResult
from rlm.errors import ToolError


class IPythonArgs(BaseModel):
    code: str = Field(description="Python code (IPython syntax) to run in the persistent kernel.")
    timeout: int | None = Field(
        default=None,
        description="Seconds before the execution is interrupted (default and ceiling: the "
        "configured exec timeout).",
    )


class IPythonTool(Tool):
    name = "ipython"
    description = (
        "Run code in a persistent IPython kernel. Variables, imports and definitions survive "
        "between calls. Use `!command` for a shell command and a `%%bash` cell for a multi-line "
        "shell script; top-level `await` works. The result is everything the cell printed or "
        "displayed, its value, and the traceback if it raised."
    )
    Args = IPythonArgs
    caps_own_output = True

    async def run(self, args: IPythonArgs, ctx: ToolContext) -> ToolResult:
        if ctx.kernel is None:
            raise ToolError("the ipython kernel is not available")
        ceiling = ctx.settings.exec_timeout
        timeout = (
            ceiling if args.timeout is None or args.timeout <= 0 else min(args.timeout, ceiling)
        )
        try:
            result = await ctx.kernel.execute(args.code, timeout)
        finally:
            # Children belong to the cell that started them: when it ends, however it ends,
            # whatever it left running is cancelled.
            if ctx.agent is not None:
                await ctx.agent.cell_finished()
        if ctx.agent is not None and result.status in ("died", "restarted"):
            await ctx.agent.kernel_restarted(result.status)
        # The log keeps the cell's real outputs (MIME bundles, the error's fields) for
        # notebook export, then rlm's notes on the execution; the model reads the text.
        outputs = list(result.outputs)
        if result.notes:
            text = "".join(f"[{note}]\n" for note in result.notes)
            outputs.append({"msg_type": "stream", "content": {"name": "stderr", "text": text}})
        return ToolResult(result.text, {"outputs": outputs})
