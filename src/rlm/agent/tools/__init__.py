"""The built-in tools, one module each, listed in ``REGISTRY`` by the name the model uses."""

from __future__ import annotations

from rlm.agent.tools.base import Tool, ToolContext, ToolResult
from rlm.agent.tools.bash import BashTool
from rlm.agent.tools.edit import EditTool
from rlm.agent.tools.ipython import IPythonTool
from rlm.agent.tools.summarize import SummarizeTool
from rlm.config import BUILTIN_TOOLS, Settings

__all__ = ["REGISTRY", "Tool", "ToolContext", "ToolResult", "enabled_tools"]

REGISTRY: dict[str, type[Tool]] = {
    tool.name: tool for tool in (IPythonTool, SummarizeTool, BashTool, EditTool)
}
assert tuple(REGISTRY) == BUILTIN_TOOLS, "config.BUILTIN_TOOLS must list the registry in order"


def enabled_tools(settings: Settings) -> dict[str, Tool]:
    """The tools this agent may call, in the registry's order."""
    return {name: REGISTRY[name]() for name in BUILTIN_TOOLS if name in settings.tools}
