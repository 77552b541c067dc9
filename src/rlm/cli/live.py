"""The live view: the running agent tree on stderr, drawn by rich's ``Live`` (a terminal only).

Per agent, indented by depth under its parent: a header line (status, name, a clock, turn,
tokens, cost, what it is doing now, and last, so a narrow terminal cuts it first, the task),
then while it runs the end of the text the model is writing (streamed; reasoning dimmed) and
its last tool calls with a short input and output preview. A finished child collapses to its header and hides its descendants. A retry
shows in the agent's header with its countdown, and once as a line above the tree.

The view is a renderable that draws itself from its state each time ``Live`` refreshes (8
times a second, from rich's thread): the clocks and countdowns move between events, and
events only change state (under a lock). Every line is cut to the terminal's width, never
wrapped. When a run (or, interactively, a message) ends, :meth:`LiveView.stop` leaves the
final tree on screen and prints one summary line: turns, tokens, cost if priced, time and
the session folder. Used only when stderr is a terminal; otherwise the CLI prints plain
progress lines (:mod:`rlm.cli.progress`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from rlm.agent import events as ev
from rlm.agent.stream import DeltaKind
from rlm.cli.progress import retry_line, summary_line
from rlm.schema import Status
from rlm.terminal import NAME_LIMIT, safe

__all__ = ["LiveView"]

_MARK: dict[str, tuple[str, str]] = {
    Status.RUNNING: ("●", "yellow"),
    Status.DONE: ("✓", "green"),
    Status.ERROR: ("✗", "red"),
    Status.CANCELLED: ("⊘", "red"),
}

#: Lines that are only a rule (``-----`` above a traceback).
_RULE = re.compile(r"^[-=─_ ]{3,}$", re.MULTILINE)

#: Characters of streamed text kept per agent (only its end is ever shown).
_TEXT_KEPT = 4000


@dataclass
class _Tool:
    name: str
    input: str
    output: str | None = None
    error: bool = False
    duration: float = 0.0


@dataclass
class _Row:
    agent_id: str
    depth: int
    task: str
    session_path: str = ""
    started: float = field(default_factory=time.monotonic)
    status: str = Status.RUNNING
    turn: int = 0
    turns: int = 0
    """Replies of this agent since the view started (the summary's turns)."""
    activity: str = ""
    tokens: int = 0
    cost: float = 0.0
    llm_calls: int = 0
    llm_tokens: int = 0
    functions: int = 0
    elapsed: float | None = None
    text: str = ""
    reasoning: str = ""
    tools: list[_Tool] = field(default_factory=list)
    answered: bool = False
    """The last reply had no tool calls (an answer)."""
    message_status: str | None = None
    """How its last message ended (``TurnFinished``): a session root's mark when it ends."""
    retry: ev.ModelRetry | None = None
    retry_until: float = 0.0
    children: list[str] = field(default_factory=list)


class LiveView:
    """An ``on_event`` callback that keeps a rich ``Live`` display of the tree.

    ``start(task)`` begins a run (interactively: one message, whose text becomes the root's
    task and whose clock starts at zero); ``stop()`` ends it with the summary line.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.rows: dict[str, _Row] = {}
        self.roots: list[str] = []
        self._live: Live | None = None
        self._lock = threading.RLock()
        self._started = time.monotonic()
        self._task: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, task: str | None = None) -> None:
        with self._lock:
            self._started, self._task = time.monotonic(), task
            for root in self.roots:  # a session's next message: a fresh turn of the same root
                row = self.rows[root]
                row.status, row.elapsed, row.started = Status.RUNNING, None, self._started
                row.turns = row.tokens = row.llm_calls = row.llm_tokens = row.functions = 0
                row.cost, row.text, row.reasoning, row.activity = 0.0, "", "", ""
                row.answered, row.message_status = False, None
                row.tools, row.children, row.retry = [], [], None
                if task is not None:
                    row.task = task
            self.rows = {k: v for k, v in self.rows.items() if k in self.roots}
        if self._live is None:
            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=8,
                transient=False,
                redirect_stdout=False,
            )
            self._live.start()

    def stop(self) -> None:
        """Draw the final tree, stop redrawing, print the summary line of the run."""
        with self._lock:
            now = time.monotonic()
            for row in self.rows.values():  # interactively the root never finishes per message
                if row.elapsed is None:
                    row.elapsed = now - row.started
                    row.activity, row.retry = "", None
                if row.depth == 0 and row.status == Status.RUNNING:  # a message ended
                    row.status = row.message_status or (
                        Status.DONE if row.answered else Status.CANCELLED
                    )
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:  # Live ends its last frame with a newline only there
                self.console.line()
        line = self.summary()
        if line:
            self.console.print(Text(safe(line), style="dim"), soft_wrap=True)

    def summary(self) -> str | None:
        """``rlm: 2 turns · 1,234 tokens · $0.0042 · 3.1 s · session <path>`` of the roots."""
        with self._lock:
            if not self.roots:
                return None
            rows = list(self.rows.values())
            root = self.rows[self.roots[0]]
            tokens = sum(r.tokens + r.llm_tokens for r in rows)
            cost = sum(r.cost for r in rows)
            took = time.monotonic() - self._started
            ended = root.status if root.status != Status.RUNNING else Status.DONE
            return summary_line(root.turns, tokens, cost, took, root.session_path, ended)

    # -- events --------------------------------------------------------------------------------

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self._apply(event)
        if isinstance(event, (ev.ModelRetry, ev.EndpointWarning)):
            prefix = "" if event.depth == 0 else f"[{safe(event.agent_id.rsplit('/', 1)[-1])}] "
            said = (
                retry_line(event)
                if isinstance(event, ev.ModelRetry)
                else f"rlm: warning: {event.message}"
            )
            self.console.print(Text(safe(prefix + said)), soft_wrap=True)

    def _apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.AgentStarted):
            # A session's root starts without a task: its messages are the tasks.
            task = event.task or (self._task or "" if event.parent_id is None else "")
            self.rows[event.agent_id] = _Row(event.agent_id, event.depth, task, event.session_path)
            parent = self.rows.get(event.parent_id or "")
            if parent is not None:
                parent.children.append(event.agent_id)
            elif event.agent_id not in self.roots:
                self.roots.append(event.agent_id)
        row = self.rows.get(event.agent_id)
        if row is None:
            return
        if isinstance(event, ev.ModelRequest):
            row.turn, row.activity, row.text, row.reasoning = event.turn, "thinking", "", ""
            row.retry = None
        elif isinstance(event, ev.ModelDelta):
            row.retry = None
            if event.part is DeltaKind.TEXT:
                row.text = (row.text + event.text)[-_TEXT_KEPT:]
                row.activity = "writing"
            elif event.part is DeltaKind.REASONING:
                row.reasoning = (row.reasoning + event.text)[-_TEXT_KEPT:]
                row.activity = "reasoning"
            else:
                row.activity = "writing a tool call"
        elif isinstance(event, ev.ModelResponse):
            row.tokens += (event.prompt_tokens or 0) + (event.completion_tokens or 0)
            row.cost += event.cost
            row.turn, row.turns = event.turn, row.turns + 1
            row.activity, row.answered = "", event.tool_calls == 0
        elif isinstance(event, ev.ModelRetry):
            row.retry, row.retry_until = event, time.monotonic() + event.wait
            row.text = row.reasoning = ""  # the stream starts again
        elif isinstance(event, ev.ToolStarted):
            row.tools = [*row.tools[-3:], _Tool(safe(event.name, NAME_LIMIT), event.preview)]
            row.activity = "running"
        elif isinstance(event, ev.ToolFinished):
            if row.tools and row.tools[-1].output is None:
                tool = row.tools[-1]
                tool.output, tool.error, tool.duration = event.preview, event.error, event.duration
            row.activity = ""
        elif isinstance(event, ev.LlmCallFinished):
            row.llm_calls += 1
            row.llm_tokens += (event.prompt_tokens or 0) + (event.completion_tokens or 0)
        elif isinstance(event, ev.HostFunctionFinished):
            row.functions += 1
        elif isinstance(event, ev.TurnFinished):  # waits for its next message (rlm.spawn)
            row.activity, row.text, row.reasoning, row.tools = "idle", "", "", []
            row.message_status = event.status
        elif isinstance(event, ev.AgentFinished):
            row.status, row.elapsed, row.activity, row.retry = event.status, event.elapsed, "", None

    # -- drawing -------------------------------------------------------------------------------

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width)

    def render(self, width: int | None = None) -> Text:
        """The tree as one text (lines cut to ``width``, default the console's)."""
        return Text("\n").join(self.lines(width or self.console.width))

    def lines(self, width: int) -> list[Text]:
        with self._lock:
            out: list[Text] = []
            for root in self.roots:
                self._draw(self.rows[root], out, width, top=True)
        for line in out:
            line.no_wrap, line.overflow = True, "ellipsis"
            line.truncate(max(width, 1), overflow="ellipsis")
        return out

    def _draw(self, row: _Row, out: list[Text], width: int, top: bool = False) -> None:
        now = time.monotonic()
        elapsed = row.elapsed if row.elapsed is not None else now - row.started
        mark, colour = _MARK.get(row.status, ("?", "white"))
        pad = "  " * row.depth
        line = Text(pad)
        line.append(mark, style=colour)
        line.append(f" {safe(row.agent_id.rsplit('/', 1)[-1], NAME_LIMIT)}", style="bold")
        facts = f" {elapsed:.1f}s · turn {row.turn} · {row.tokens:,} tok"
        if row.cost:
            facts += f" · ${row.cost:.4f}"
        if row.llm_calls:
            facts += f" · llm {row.llm_calls} ({row.llm_tokens} tok)"
        if row.functions:
            facts += f" · fn {row.functions}"
        line.append(facts)
        running = row.status == Status.RUNNING and row.elapsed is None
        if running and row.retry is not None:
            left = max(0.0, row.retry_until - now)
            line.append(
                f" · {_one_line(row.retry.reason, 60)}, retry in {left:.0f}s "
                f"({row.retry.attempt}/{row.retry.attempts})",
                style="red",
            )
        elif running and row.activity:
            line.append(f" · {row.activity}", style="cyan")
        if row.task.strip():  # last: a narrow terminal cuts it first
            line.append(f" — {_one_line(row.task, 200)}", style="dim")
        out.append(line)
        if running:
            self._details(row, out, pad + "  ", width)
        if running or top:
            for child in row.children:
                self._draw(self.rows[child], out, width)

    def _details(self, row: _Row, out: list[Text], pad: str, width: int) -> None:
        """The end of the streamed text, then the last tool calls."""
        keep = 3 if row.depth == 0 else 1
        room = width - len(pad) - 2
        if row.text.strip():
            for text in _tail(row.text, keep, room):
                out.append(Text(f"{pad}│ ") + Text(text))
        elif row.reasoning.strip():
            for text in _tail(row.reasoning, keep, room):
                out.append(Text(f"{pad}│ ", style="dim") + Text(text, style="dim italic"))
        for tool in row.tools[-(2 if row.depth == 0 else 1) :]:
            line = Text(f"{pad}")
            line.append(f"{tool.name} ", style="magenta")
            line.append(_one_line(tool.input, 80))
            if tool.output is None:
                line.append(" …", style="cyan")
            else:
                line.append(" → ", style="red" if tool.error else "green")
                output = _RULE.sub("", tool.output)  # a traceback's rule says nothing
                line.append(_one_line(output, 120), style="red" if tool.error else "")
            out.append(line)


def _one_line(text: str, width: int) -> str:
    line = " ".join(safe(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _tail(text: str, count: int, width: int) -> Iterator[str]:
    """The last ``count`` non-blank lines of ``text``, terminal-safe, each cut to ``width``
    from the left: the end of a line is what the model just wrote."""
    lines = [line for line in safe(text).replace("\t", " ").splitlines() if line.strip()]
    width = max(width, 2)
    for line in lines[-count:]:
        yield line if len(line) <= width else "…" + line[-(width - 1) :]
