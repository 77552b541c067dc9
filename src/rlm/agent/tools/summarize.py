"""``summarize``: the model trades old turns for a summary it writes itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rlm.agent.tools.base import Tool, ToolContext
from rlm.config import Settings
from rlm.errors import ToolError


class SummarizeArgs(BaseModel):
    num_turns: int = Field(
        description="How many of the oldest turns still in context to drop (a turn is one of "
        "your messages with its tool results). The system prompt and the task always stay."
    )
    summary: str = Field(
        description="What the dropped turns established that you still need: facts, file "
        "names, variable names, decisions."
    )
    flush_repl_state: bool = Field(
        default=False,
        description="Also restart the IPython kernel, dropping every variable and import.",
    )


class SummarizeTool(Tool):
    name = "summarize"
    description = (
        "Drop the oldest turns from your context and keep a summary in their place, to make "
        "room. Summaries accumulate. The turn that calls summarize is never dropped."
    )
    Args = SummarizeArgs

    def schema(self, settings: Settings) -> dict[str, Any]:
        schema = super().schema(settings)
        if "ipython" not in settings.tools:
            schema["function"]["parameters"]["properties"].pop("flush_repl_state", None)
        return schema

    async def run(self, args: SummarizeArgs, ctx: ToolContext) -> str:
        agent = ctx.agent
        if agent is None:
            raise ToolError("summarize needs a running agent")
        note = agent.context.summarize(args.num_turns, args.summary)
        agent.log_event(
            "summarize",
            turns=note.turns,
            summary=args.summary,
            flush_repl_state=args.flush_repl_state,
        )
        text = f"Dropped turns {note.turns[0]}-{note.turns[1]} from context; summary kept."
        if args.flush_repl_state and "ipython" in ctx.settings.tools:
            if ctx.kernel is None:
                raise ToolError("there is no kernel to restart")
            await ctx.kernel.restart()
            await agent.kernel_restarted("flush_repl_state")
            text += " The kernel was restarted: every variable and import is gone."
        return text
