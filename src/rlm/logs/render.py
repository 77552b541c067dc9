"""Rendering sessions for the terminal with rich: the list, the call tree, a conversation.

Output stays plain when it is not a terminal (no colours, no padding), so it can be piped
and grepped; ``show --color always`` forces highlighting.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from rlm.logs.prices import Prices, agent_cost, tree_cost
from rlm.logs.replay import Call, transcript
from rlm.logs.store import INTERRUPTED, AgentNode, parse_time
from rlm.schema import Status
from rlm.terminal import NAME_LIMIT, safe

__all__ = [
    "fmt_duration",
    "fmt_tokens",
    "render_list",
    "render_show",
    "render_tree",
]

STATUS_STYLE: dict[str, str] = {
    Status.DONE: "green",
    Status.ERROR: "bold red",
    Status.RUNNING: "yellow",
    INTERRUPTED: "magenta",
    Status.CANCELLED: "dim",
}


# -- small formatters ----------------------------------------------------------------------


def fmt_count(n: int) -> str:
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def fmt_tokens(usage: tuple[int, int]) -> str:
    """``prompt/completion``, compact."""
    return f"{fmt_count(usage[0])}/{fmt_count(usage[1])}"


def fmt_duration(seconds: float | None, ongoing: bool = False) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        text = f"{seconds:.1f}s"
    elif seconds < 60:
        text = f"{seconds:.0f}s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    else:
        text = f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return text + "…" if ongoing else text


def fmt_cost(dollars: float | None, complete: bool = True) -> str:
    if dollars is None:
        return "?"
    if dollars >= 1:
        text = f"${dollars:,.2f}"
    elif dollars >= 0.01 or dollars == 0:
        text = f"${dollars:.4f}"
    else:
        text = f"${dollars:.6f}"
    return text if complete else f"≥{text}"


def fmt_time(moment: datetime | None, *, seconds: bool = False) -> str:
    if moment is None:
        return "?"
    local = moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def first_line(text: str, limit: int = 60) -> str:
    lines = safe(text).strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > limit:
        return line[: limit - 1].rstrip() + "…"
    return line + " …" if len(lines) > 1 else line


def status_text(node: AgentNode, *, reason: bool = False) -> Text:
    status = node.status
    label = status
    stop = node.stop_reason
    if reason and status in (Status.ERROR, Status.CANCELLED) and stop and stop != status:
        label = f"{status}: {stop}"
    label = node.spawned_state or label  # a child of rlm.spawn: idle or busy while it lives
    return Text(label, style=STATUS_STYLE.get(status, ""))


def _table(columns: list[str], rows: list[list[Any]]) -> Table:
    """A plain table; every column but the task keeps its full width on a narrow terminal
    (the task is shortened instead)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        numeric = column in ("turns", "tokens", "total", "children", "duration")
        width = max(
            [len(column)]
            + [Text(r[i]).cell_len if isinstance(r[i], str) else r[i].cell_len for r in rows]
        )
        table.add_column(
            column,
            justify="right" if numeric or column.endswith("cost") else "left",
            no_wrap=True,
            overflow="ellipsis",
            min_width=None if column == "task" else width,
        )
    for row in rows:
        table.add_row(*(_safe_text(cell) if isinstance(cell, Text) else safe(cell) for cell in row))
    return table


def _safe_text(text: Text) -> Text:
    """``text`` as the terminal may show it (see :func:`rlm.terminal.safe`); a text that had
    to change keeps its overall style only."""
    clean = safe(text.plain)
    return text if clean == text.plain else Text(clean, style=text.style)


# -- list ----------------------------------------------------------------------------------


def render_list(console: Console, roots: list[AgentNode], prices: Prices | None) -> None:
    columns = ["id", "started", "status", "model", "turns", "tokens", "total", "children"]
    columns += ["cost"] if prices is not None else []
    rows: list[list[Any]] = []
    for node in roots:
        row: list[Any] = [
            node.id,
            fmt_time(node.started),
            status_text(node),
            node.model,
            str(node.turns),
            fmt_tokens(node.usage()),
            fmt_tokens(node.usage(total=True)),
            str(len(node.children)),
        ]
        if prices is not None:
            row.append(fmt_cost(*tree_cost(node, prices)))
        row.append(first_line(node.task))
        rows.append(row)
    emit(console, _table([*columns, "task"], rows))


# -- tree ----------------------------------------------------------------------------------


def render_tree(console: Console, root: AgentNode, prices: Prices | None) -> None:
    # the sub-model call column appears only in trees that made some (``rlm.llm``)
    llm = any(node.llm_calls for node in root.walk())
    columns = ["agent", "status", "model", "turns", "tokens", "total", "duration"]
    columns += ["llm calls (tokens)"] if llm else []
    columns += ["cost", "total cost"] if prices is not None else []
    rows: list[list[Any]] = []

    def add(node: AgentNode, guide: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        label = Text(guide + branch, style="dim")
        label.append(node.id if top else node.name, style="bold" if top else "")
        seconds, ongoing = node.duration()
        row: list[Any] = [
            label,
            status_text(node, reason=True),
            node.model,
            str(node.turns),
            fmt_tokens(node.usage()),
            fmt_tokens(node.usage(total=True)),
            fmt_duration(seconds, ongoing),
        ]
        if llm:
            calls = node.llm_calls
            row.append(f"{calls} ({fmt_tokens(node.llm_usage())})" if calls else "")
        if prices is not None:
            row += [fmt_cost(agent_cost(node, prices)), fmt_cost(*tree_cost(node, prices))]
        row.append(first_line(node.task, 50))
        rows.append(row)
        kids = node.children
        below = "" if top else guide + ("    " if last else "│   ")
        for i, child in enumerate(kids):
            add(child, below, i == len(kids) - 1, False)

    add(root, "", True, True)
    emit(console, _table([*columns, "task"], rows))


# -- show ----------------------------------------------------------------------------------


class _Show:
    def __init__(self, console: Console, node: AgentNode, show_system: bool) -> None:
        self.console = console
        self.node = node
        self.show_system = show_system
        self.color = console.color_system is not None

    def print(self, text: str | Text, style: str = "", indent: int = 0) -> None:
        text = Text(safe(text), style=style) if isinstance(text, str) else _safe_text(text)
        if indent:
            pad = " " * indent
            lines = text.split("\n", allow_blank=True)
            text = Text("\n").join(Text(pad) + line if line.plain else line for line in lines)
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def rule(self, title: str, style: str = "cyan") -> None:
        self.console.rule(Text(safe(title, NAME_LIMIT), style=style), style="dim", align="left")

    def code(self, source: str, lexer: str) -> None:
        source = safe(source)
        if self.color:
            syntax = Syntax(source, lexer, word_wrap=True, background_color="default")
            self.console.print(Padding(syntax, (0, 0, 0, 4)))
        else:
            self.print(source, indent=4)

    def header(self) -> None:
        node = self.node
        title = Text("agent ", style="bold")
        title.append(node.id, style="bold cyan")
        title.append(f"  depth {node.depth}  model {node.model}")
        self.print(title)
        line = Text("status ")
        line.append_text(status_text(node, reason=True))
        seconds, ongoing = node.duration()
        line.append(
            f"  {node.turns} turn{'' if node.turns == 1 else 's'}  tokens {fmt_tokens(node.usage())}"
            f" (tree {fmt_tokens(node.usage(total=True))})"
            f"  {fmt_duration(seconds, ongoing)}"
        )
        self.print(line)
        started = f"started {fmt_time(node.started, seconds=True)}"
        resumed = node.meta.resumed
        if resumed is not None:
            started += f"  resumed {fmt_time(resumed, seconds=True)}"
        cwd = node.meta.cwd
        self.print(started + (f"  cwd {cwd}" if cwd else ""), style="dim")
        if node.parent is not None:
            self.print(f"spawned by {node.parent.id}", style="dim")
        if node.children:
            names = ", ".join(f"{c.name} ({c.status})" for c in node.children)
            self.print(f"sub-agents: {names}", style="dim")

    def call(self, call: Call) -> None:
        title = Text("▶ ", style="bold yellow")
        title.append(safe(call.name, NAME_LIMIT), style="bold")
        title.append(f"  {call.id}", style="dim")
        args = call.arguments
        if args is None:
            self.print(title)
            self.print(f"invalid JSON arguments: {call.raw_arguments}", style="red", indent=4)
            return
        if call.name == "ipython" and isinstance(args.get("code"), str):
            if args.get("timeout") is not None:
                title.append(f"  timeout {args['timeout']} s", style="dim")
            self.print(title)
            self.code(args["code"], "python")
        elif call.name == "bash" and isinstance(args.get("command"), str):
            self.print(title)
            self.code(args["command"], "bash")
        elif call.name == "summarize":
            title.append(f"  drop {args.get('num_turns')} turn(s)", style="dim")
            if args.get("flush_repl_state"):
                title.append("  + restart the kernel", style="dim")
            self.print(title)
            self.print(str(args.get("summary", "")), indent=4)
        elif call.name == "edit" and isinstance(args.get("path"), str):
            title.append(f"  {args['path']}", style="")
            self.print(title)
            for key, mark, style in (("old_str", "-", "red"), ("new_str", "+", "green")):
                if isinstance(args.get(key), str):
                    text = "\n".join(f"{mark} {line}" for line in args[key].split("\n"))
                    self.print(text, style=style, indent=4)
        else:
            self.print(title)
            self.code(json.dumps(args, indent=2, ensure_ascii=False), "json")
        if call.result is None:
            self.spawned(call)

    def result(self, call: Call) -> None:
        title = Text("◀ ", style="bold blue")
        title.append(f"{safe(call.name, NAME_LIMIT)} result", style="bold")
        title.append(f"  {call.id}", style="dim")
        self.print(title)
        text = call.result or ""
        style = "red" if text.startswith("Error:") else ""
        self.print(text, style=style, indent=4)
        self.spawned(call)

    def spawned(self, call: Call) -> None:
        for child in call.children:
            line = Text("    ↳ spawned ", style="magenta")
            line.append(child.name, style="bold magenta")
            line.append(" (")
            line.append_text(status_text(child, reason=True))
            turns = f"{child.turns} turn{'' if child.turns == 1 else 's'}"
            line.append(f", {turns}): {first_line(child.task, 70)}")
            self.print(line)

    def event(self, record: dict[str, Any]) -> None:
        name = record.get("event")
        if name == "summarize":
            turns = record.get("turns") or ["?", "?"]
            text = f"✂ summarize: turns {turns[0]}-{turns[-1]} left the context"
            if record.get("flush_repl_state"):
                text += " (kernel state flushed)"
            if record.get("automatic"):  # compaction: no tool call shows the summary
                text = f"✂ compacted ({record.get('reason')}): {text.removeprefix('✂ summarize: ')}"
                self.print(text, style="bold magenta")
                self.print(str(record.get("summary") or ""), indent=4)
                return
            self.print(text, style="bold magenta")
        elif name == "context_window":
            self.print(
                f"✂ context window: {record.get('dropped_turns')} oldest turn(s) dropped, "
                f"{record.get('kept')} kept",
                style="bold magenta",
            )
        elif name == "kernel_restarted":
            self.print(f"⟳ kernel restarted ({record.get('reason')})", style="bold yellow")
        elif name == "crash":
            self.print(f"✗ crash: {record.get('error')}", style="bold red")
        elif name == "resumed":
            self.print("⟲ resumed: a new kernel (earlier variables are gone)", style="bold yellow")
        elif name == "turn_cancelled":
            self.print(
                f"✗ turn cancelled: the last {record.get('discard_lines')} log line(s) "
                "left the context",
                style="bold red",
            )
        else:
            fields = {k: v for k, v in record.items() if k not in ("event", "timestamp")}
            self.print(f"• {name} {json.dumps(fields, ensure_ascii=False)}", style="dim")

    def run(self) -> None:
        node = self.node
        self.header()
        seen = transcript(node)
        for index, record in enumerate(seen.records):
            role = record.get("role")
            content = record.get("content")
            text = content if isinstance(content, str) else ""
            if content is not None and not isinstance(content, str):
                text = json.dumps(content, ensure_ascii=False)
            if "event" in record and role is None:
                self.event(record)
            elif role == "system":
                if self.show_system:
                    self.rule("system")
                    self.print(text)
                else:
                    self.rule(f"system  ({len(text):,} characters; --system shows it)", "dim")
            elif record.get("kind") == "context":
                self.rule(f"prior context: {role}", "green")
                self.print(text)
            elif role == "user":
                nudge = record.get("kind") == "nudge" or _after_empty_reply(seen.records, index)
                self.rule("user (the agent's nudge)" if nudge else "user", "bold green")
                self.print(text)
            elif role == "assistant":
                title = f"turn {seen.turn_of_line.get(index, '?')}"
                moment = parse_time(record.get("timestamp"))
                if moment is not None:
                    title += f"  {moment.astimezone().strftime('%H:%M:%S')}"
                usage = record.get("usage")
                if isinstance(usage, dict):
                    pair = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                    title += f"  {fmt_tokens(pair)} tokens"
                self.rule(title, "bold cyan")
                if text.strip():
                    self.print(text)
                elif not seen.by_line.get(index):
                    self.print("(an empty reply: no text, no tool call)", style="dim")
                for call in seen.by_line.get(index, []):
                    self.call(call)
            elif role == "tool":
                calls = seen.by_line.get(index)
                if calls:
                    self.result(calls[0])
                else:
                    self.print(f"◀ result of unknown call {record.get('tool_call_id')}", "dim")
                    self.print(text, indent=4)
        self.footer(seen.unmatched_children)

    def footer(self, unmatched: list[AgentNode]) -> None:
        node = self.node
        for child in unmatched:
            self.print(
                f"↳ sub-agent {child.name} ({child.status}) not matched to a call: "
                f"{first_line(child.task, 70)}",
                style="magenta",
            )
        self.rule("end", "bold")
        status = node.status
        if status == Status.DONE:
            self.print(Text("✓ done", style="bold green"))
        elif status == Status.RUNNING:
            self.print(f"… running (pid {node.meta.pid})", style="yellow")
        elif status == INTERRUPTED:
            self.print(
                f"⚠ interrupted: meta.json says running but its process "
                f"(pid {node.meta.pid}) is gone; the log ends here",
                style="magenta",
            )
        else:
            reason = node.stop_reason
            line = Text(f"✗ {status}", style=STATUS_STYLE.get(status, "bold"))
            if reason:
                line.append(f" ({reason})")
            if node.meta.error:
                line.append(f": {node.meta.error}")
            self.print(line)
        if node.log.error:
            self.print(f"note: {node.log.error}", style="dim")
        if node.log.skipped:
            self.print(
                f"note: {node.log.skipped} unreadable line(s) of messages.jsonl skipped "
                "(a line cut off by a kill?)",
                style="dim",
            )


def _after_empty_reply(records: list[dict[str, Any]], index: int) -> bool:
    """Whether the user message at ``index`` answers an empty assistant reply (a nudge)."""
    for record in reversed(records[:index]):
        if "role" in record:
            return (
                record.get("role") == "assistant"
                and not record.get("tool_calls")
                and not (record.get("content") or "").strip()
            )
    return False


def emit(console: Console, renderable: Any) -> None:
    """Print; when not on a terminal, without the padding rich adds at line ends."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as capture:
        console.print(renderable)
    text = "\n".join(line.rstrip() for line in capture.get().split("\n"))
    console.file.write(text)
    console.file.flush()


def render_show(console: Console, node: AgentNode, *, show_system: bool = False) -> None:
    _Show(console, node, show_system).run()
