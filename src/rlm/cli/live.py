"""The live view: the running agent tree on stderr, redrawn as events arrive (rich).

One line per agent, indented by depth: status, turn, the tool it is running, tokens and
elapsed time. A finished child collapses to one summary line and hides its descendants.
Used only when stderr is a terminal; otherwise the CLI prints plain progress lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from rlm.agent import events as ev
from rlm.cli.progress import retry_line
from rlm.schema import Status
from rlm.terminal import NAME_LIMIT, safe

__all__ = ["LiveView"]

_MARK: dict[str, str] = {
    Status.RUNNING: "[yellow]●[/]",
    Status.DONE: "[green]✓[/]",
    Status.ERROR: "[red]✗[/]",
    Status.CANCELLED: "[red]⊘[/]",
}


@dataclass
class _Row:
    agent_id: str
    depth: int
    task: str
    started: float = field(default_factory=time.monotonic)
    status: str = Status.RUNNING
    turn: int = 0
    tool: str = ""
    tokens: int = 0
    llm_calls: int = 0
    llm_tokens: int = 0
    functions: int = 0
    elapsed: float | None = None
    children: list[str] = field(default_factory=list)


class LiveView:
    """An ``on_event`` callback that keeps a rich ``Live`` display of the tree."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.rows: dict[str, _Row] = {}
        self.roots: list[str] = []
        self._live: Live | None = None

    def start(self) -> None:
        if self._live is None:
            self._live = Live(
                self.render(), console=self.console, refresh_per_second=8, transient=False
            )
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.stop()
            self._live = None
        self.rows.clear()
        self.roots.clear()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.AgentStarted):
            self.rows[event.agent_id] = _Row(event.agent_id, event.depth, event.task)
            parent = self.rows.get(event.parent_id or "")
            if parent is not None:
                parent.children.append(event.agent_id)
            elif event.agent_id not in self.roots:
                self.roots.append(event.agent_id)
        row = self.rows.get(event.agent_id)
        if row is None:
            return
        if isinstance(event, ev.ModelRequest):
            row.turn, row.tool = event.turn, "thinking"
        elif isinstance(event, ev.ModelResponse):
            row.tokens += (event.prompt_tokens or 0) + (event.completion_tokens or 0)
            row.tool = ""
        elif isinstance(event, ev.ModelRetry):
            row.tool = retry_line(event)
            prefix = "" if event.depth == 0 else f"[{event.agent_id.rsplit('/', 1)[-1]}] "
            self.console.print(escape(safe(prefix + retry_line(event))), highlight=False)
        elif isinstance(event, ev.EndpointWarning):
            prefix = "" if event.depth == 0 else f"[{safe(event.agent_id.rsplit('/', 1)[-1])}] "
            self.console.print(
                escape(safe(f"{prefix}rlm: warning: {event.message}")), highlight=False
            )
        elif isinstance(event, ev.ToolStarted):
            row.tool = f"{safe(event.name, NAME_LIMIT)}: {event.preview}"
        elif isinstance(event, ev.ToolFinished):
            row.tool = ""
        elif isinstance(event, ev.LlmCallFinished):
            row.llm_calls += 1
            row.llm_tokens += (event.prompt_tokens or 0) + (event.completion_tokens or 0)
        elif isinstance(event, ev.HostFunctionFinished):
            row.functions += 1
        elif isinstance(event, ev.TurnFinished):  # waits for its next message (rlm.spawn)
            row.tool = "idle"
        elif isinstance(event, ev.AgentFinished):
            row.status, row.elapsed, row.tool = event.status, event.elapsed, ""
        if self._live is not None:
            self._live.update(self.render())

    def render(self) -> Group:
        lines: list[Text] = []
        for root in self.roots:
            self._render(root, lines, top=True)
        return Group(*lines)

    def _render(self, agent_id: str, lines: list[Text], top: bool = False) -> None:
        row = self.rows[agent_id]
        elapsed = row.elapsed if row.elapsed is not None else time.monotonic() - row.started
        name = agent_id.rsplit("/", 1)[-1]
        task = escape(" ".join(safe(row.task).split())[:50])
        detail = f" · {escape(' '.join(safe(row.tool).split())[:60])}" if row.tool else ""
        calls = f" · llm {row.llm_calls} ({row.llm_tokens} tok)" if row.llm_calls else ""
        calls += f" · fn {row.functions}" if row.functions else ""
        text = (
            f"{'  ' * row.depth}{_MARK.get(row.status, '?')} [bold]{name}[/] "
            f"[dim]{task}[/] turn {row.turn} · {row.tokens} tok{calls} · {elapsed:.1f}s{detail}"
        )
        lines.append(Text.from_markup(text))
        if row.status == Status.RUNNING or top:
            for child in row.children:
                self._render(child, lines)
