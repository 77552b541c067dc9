"""The built-in tools, one module each, listed in ``REGISTRY`` by the name the model uses."""

from __future__ import annotations

from ..config import BUILTIN_TOOLS, Settings
from .base import Tool, ToolContext
from .bash import BashTool
from .edit import EditTool
from .ipython import IPythonTool
from .summarize import SummarizeTool

__all__ = ["REGISTRY", "Tool", "ToolContext", "enabled_tools"]

REGISTRY: dict[str, type[Tool]] = {
    tool.name: tool for tool in (IPythonTool, SummarizeTool, BashTool, EditTool)
}
assert tuple(REGISTRY) == BUILTIN_TOOLS, "config.BUILTIN_TOOLS must list the registry in order"


def enabled_tools(settings: Settings) -> dict[str, Tool]:
    """The tools this agent may call, in the registry's order."""
    return {name: REGISTRY[name]() for name in BUILTIN_TOOLS if name in settings.tools}
