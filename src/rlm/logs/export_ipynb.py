"""``rlm sessions export --format ipynb``: one Jupyter notebook per agent of a tree.

Each notebook tells one agent's run in order: a markdown cell with the task, markdown cells
for the model's text, a code cell per ipython call with what the model read back as the
cell's outputs, other tool calls (bash, edit, summarize) as markdown code blocks, and a link
to the notebook of every sub-agent next to the cell that spawned it.

A cell's outputs are rebuilt with ``nbformat.v4.output_from_msg`` from the structured
``outputs`` its tool message's log line keeps (streams, values and displays with their MIME
bundles, errors with ``ename``/``evalue``/``traceback``; see docs/sessions.md). Logs written
before those were kept have only the text the model received; for them (the fallback) the
text becomes a stream, or a stream plus an error output when it holds a Python traceback.

Before the first code cell comes a setup cell (``import rlm``, metadata ``rlm.kind ==
"setup"``, no execution count): the agent's kernel had ``rlm`` imported before its first cell,
so without it a re-run notebook fails at the first ``await rlm.run(...)`` with a NameError.
Re-run in an ordinary kernel, that call starts a new agent with the reader's own settings
(``rlm.run`` outside an agent kernel is the library call); no stub replays recorded answers,
because a notebook that seems to re-run but silently returns old answers would mislead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from rlm.logs.render import first_line
from rlm.logs.replay import Call, transcript
from rlm.logs.store import INTERRUPTED, AgentNode, SessionError
from rlm.schema import Status

__all__ = [
    "build_notebook",
    "export_notebooks",
    "logged_outputs",
    "notebook_name",
    "split_output",
]

#: The setup cell's source: what the agent's kernel had before its first cell.
SETUP_SOURCE = """\
# Added by `rlm sessions export`: the agent's kernel had `rlm` imported before its first cell.
# Re-run here, `await rlm.run(...)` starts a new agent with your own RLM_* settings (a real
# model call); `rlm.llm` works only inside an rlm agent's kernel, and variables loaded with
# `--input` are not defined.
import rlm"""

_TRACEBACK = re.compile(
    r"^(?:-{10,}\n)?(?:(?P<name>[A-Za-z_][\w.]*)\s+)?Traceback \(most recent call last\):?[ \t]*$",
    re.MULTILINE,
)
_EXC_LINE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?::[ \t]?(?P<value>.*))?$")
_EXC_NAME = re.compile(r"(Error|Exception|Interrupt|Exit|Warning|Iteration)$")
_NOTE = re.compile(r"^\[.*\]$")


def notebook_name(node: AgentNode) -> str:
    """``<agent id with / replaced by __>.ipynb``."""
    return node.id.replace("/", "__") + ".ipynb"


def _fence(text: str, lang: str = "") -> str:
    """A markdown code block that survives backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip(chr(10))}\n{fence}"


def _stream(text: str) -> Any:
    return v4.new_output("stream", name="stdout", text=text if text.endswith("\n") else text + "\n")


def split_output(text: str | None) -> list[Any]:
    """The notebook outputs for the text an ipython call returned.

    ``[no output]`` gives none. Text holding a Python traceback (IPython's or the plain
    ``Traceback (most recent call last):``) becomes a stream of what was printed before it, an
    error output (ename, evalue, traceback lines), and a stream of rlm's trailing notes such
    as ``[output truncated: ...]``; anything else is one stream."""
    if text is None or not text.strip() or text.strip() == "[no output]":
        return []
    match = _TRACEBACK.search(text)
    if match is None:
        return [_stream(text)]
    before, rest = text[: match.start()], text[match.start() :]
    lines = rest.rstrip("\n").split("\n")
    notes: list[str] = []
    while len(lines) > 1 and _NOTE.match(lines[-1]):
        notes.insert(0, lines.pop())
    ename, evalue, at = match.group("name"), "", None
    for i in range(len(lines) - 1, 0, -1):
        found = _EXC_LINE.match(lines[i])
        if not found:
            continue
        name = found.group("name")
        if (ename and name == ename) or (
            not ename and (found.group("value") is not None or _EXC_NAME.search(name))
        ):
            ename, evalue, at = name, found.group("value") or "", i
            break
    if ename is None or at is None:
        return [_stream(text)]
    evalue = "\n".join([evalue, *lines[at + 1 :]]).strip("\n")
    outputs = [_stream(before)] if before.strip() else []
    outputs.append(v4.new_output("error", ename=ename, evalue=evalue, traceback=lines))
    if notes:
        outputs.append(_stream("\n".join(notes)))
    return outputs


def logged_outputs(outputs: list[dict[str, Any]], execution_count: int | None) -> list[Any]:
    """The notebook outputs for a cell's logged IOPub outputs (``msg_type`` + ``content``).

    An entry that is not a valid output (a hand-edited log) is left out rather than failing
    the export; a value's ``execution_count`` is the notebook cell's, so ``Out[n]`` matches
    ``In [n]``."""
    cells = []
    for entry in outputs:
        kind, content = entry.get("msg_type"), entry.get("content")
        if not isinstance(content, dict):
            continue
        if kind == "execute_result":
            content = {**content, "execution_count": execution_count}
        try:
            cells.append(v4.output_from_msg({"header": {"msg_type": kind}, "content": content}))
        except (KeyError, TypeError, ValueError, nbformat.ValidationError):
            continue
    return cells


class _Builder:
    def __init__(self, node: AgentNode, exported: set[str]) -> None:
        self.node = node
        self.exported = exported
        self.cells: list[Any] = []
        self.count = 0

    def md(self, text: str, **meta: Any) -> None:
        cell = v4.new_markdown_cell(text)
        if meta:
            cell.metadata["rlm"] = meta
        self.cells.append(cell)

    def link(self, node: AgentNode) -> str:
        label = f"`{node.name if node.parent is not None else node.id}`"
        return f"[{label}]({notebook_name(node)})" if node.id in self.exported else label

    def header(self) -> None:
        node = self.node
        prompt, completion = node.usage()
        lines = [
            f"# {node.id}",
            "",
            f"**Task:**\n\n{node.task}",
            "",
            f"- status: {node.status}" + (f" ({node.stop_reason})" if node.stop_reason else ""),
            f"- model: {node.model}, depth {node.depth}, {node.turns} turn(s)",
            f"- tokens: {prompt:,} prompt, {completion:,} completion (own)",
            f"- started: {node.meta.started_at or '?'}",
        ]
        if node.parent is not None:
            lines.append(f"- spawned by {self.link(node.parent)}")
        if node.children:
            kids = ", ".join(f"{self.link(c)} ({c.status})" for c in node.children)
            lines.append(f"- sub-agents: {kids}")
        self.md("\n".join(lines), kind="task")

    def call(self, call: Call) -> None:
        meta = {"turn": call.turn, "tool_call_id": call.id, "tool": call.name}
        args = call.arguments or {}
        result = call.result
        if call.name == "ipython" and isinstance(args.get("code"), str):
            if self.count == 0:
                setup = v4.new_code_cell(SETUP_SOURCE)
                setup.metadata["rlm"] = {"kind": "setup"}
                self.cells.append(setup)
            self.count += 1
            cell = v4.new_code_cell(args["code"], execution_count=self.count)
            if call.outputs is not None:
                cell.outputs = logged_outputs(call.outputs, self.count)
            else:
                cell.outputs = split_output(result)
            if result is None:
                meta["no_result"] = True
            cell.metadata["rlm"] = meta
            self.cells.append(cell)
        else:
            self.md(self._call_markdown(call, args), **meta)
        if call.children:
            spawned = [
                f"↳ spawned {self.link(c)} ({c.status}, {c.turns} turn(s)): "
                f"{first_line(c.task, 80)}"
                for c in call.children
            ]
            self.md("\n\n".join(spawned), kind="spawned", tool_call_id=call.id)

    def _call_markdown(self, call: Call, args: dict[str, Any]) -> str:
        if call.arguments is None:
            parts = [f"**{call.name}** (invalid JSON arguments)", _fence(call.raw_arguments)]
        elif call.name == "bash" and isinstance(args.get("command"), str):
            parts = ["**bash**", _fence(args["command"], "bash")]
        elif call.name == "edit" and isinstance(args.get("path"), str):
            diff = [f"- {line}" for line in str(args.get("old_str", "")).split("\n")]
            diff += [f"+ {line}" for line in str(args.get("new_str", "")).split("\n")]
            parts = [f"**edit** `{args['path']}`", _fence("\n".join(diff), "diff")]
        elif call.name == "summarize":
            head = f"**summarize**: drop {args.get('num_turns')} turn(s)"
            if args.get("flush_repl_state"):
                head += " and restart the kernel"
            summary = str(args.get("summary", ""))
            parts = [head, "\n".join("> " + line for line in summary.split("\n"))]
        else:
            parts = [f"**{call.name}**", _fence(json.dumps(args, indent=2), "json")]
        if call.result is not None:
            parts += ["Result:", _fence(call.result, "text")]
        else:
            parts.append("*(no result logged)*")
        return "\n\n".join(parts)

    def event(self, record: dict[str, Any]) -> None:
        name = record.get("event")
        if name == "summarize" and not record.get("automatic"):
            return  # the summarize call's cell shows it
        if name == "summarize":  # an automatic compaction: nothing else shows its summary
            turns = record.get("turns") or ["?", "?"]
            text = (
                f"*✂ compacted ({record.get('reason')}): turns {turns[0]}-{turns[-1]} left the "
                f"model's context; the summary kept:*\n\n{record.get('summary') or ''}"
            )
        elif name == "context_window":
            text = (
                f"*✂ context window: {record.get('dropped_turns')} oldest turn(s) left the "
                f"model's context, {record.get('kept')} kept*"
            )
        elif name == "kernel_restarted":
            text = f"*⟳ kernel restarted ({record.get('reason')}): variables are gone*"
        elif name == "crash":
            text = f"**✗ crash:** {record.get('error')}"
        elif name == "resumed":
            text = "*⟲ resumed in a new kernel: variables from the cells above are gone*"
        elif name == "turn_cancelled":
            text = (
                f"*✗ turn cancelled: the last {record.get('discard_lines')} log line(s) left "
                "the model's context (their cells did run)*"
            )
        else:
            fields = {k: v for k, v in record.items() if k not in ("event", "timestamp")}
            text = f"*event {name}: {json.dumps(fields, ensure_ascii=False)}*"
        self.md(text, kind="event", event=name)

    def build(self) -> Any:
        node = self.node
        self.header()
        seen = transcript(node)
        task_seen = False
        for index, record in enumerate(seen.records):
            role = record.get("role")
            content = record.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            if "event" in record and role is None:
                self.event(record)
            elif role == "system":
                self.md(
                    f"<details><summary>System prompt</summary>\n\n{_fence(text, 'text')}\n\n"
                    "</details>",
                    kind="system",
                )
            elif record.get("kind") == "context":
                self.md(f"**Prior context ({role}):**\n\n{text}", kind="context")
            elif role == "user":
                if not task_seen and text == node.task:
                    task_seen = True  # already in the task cell
                    continue
                label = "User (the agent's nudge)" if record.get("kind") == "nudge" else "User"
                self.md(f"**{label}:**\n\n{text}", kind="user")
            elif role == "assistant":
                turn = seen.turn_of_line.get(index)
                if content:
                    self.md(text, kind="assistant", turn=turn)
                for call in seen.by_line.get(index, []):
                    self.call(call)
            # tool results are shown with their calls
        self.footer(seen.unmatched_children)
        metadata = {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "rlm": {
                "agent_id": node.id,
                "session_id": node.session_id,
                "parent": node.parent.id if node.parent else None,
                "depth": node.depth,
                "status": node.status,
                "stop_reason": node.stop_reason,
                "model": node.model,
                "turns": node.turns,
                "usage": node.meta.usage.to_json(),
                "usage_total": node.meta.usage_total.to_json(),
                "started_at": node.meta.started_at,
                "ended_at": node.meta.ended_at,
            },
        }
        return v4.new_notebook(cells=self.cells, metadata=metadata)

    def footer(self, unmatched: list[AgentNode]) -> None:
        node = self.node
        if unmatched:
            kids = "\n".join(
                f"- {self.link(c)} ({c.status}): {first_line(c.task)}" for c in unmatched
            )
            self.md(f"Sub-agents not matched to a cell:\n\n{kids}", kind="spawned")
        status = node.status
        if status == Status.DONE:
            text = "**✓ done**"
        elif status == INTERRUPTED:
            text = (
                "**⚠ interrupted:** meta.json says running but its process is gone; "
                "the log ends here"
            )
        elif status == Status.RUNNING:
            text = "**… still running** when this notebook was exported"
        else:
            text = f"**✗ {status}**"
            if node.stop_reason:
                text += f" ({node.stop_reason})"
            if node.meta.error:
                text += f": {node.meta.error}"
        self.md("---\n\n" + text, kind="status")


def build_notebook(node: AgentNode, exported: set[str] | None = None) -> Any:
    """The notebook of one agent; links point to the agents in ``exported`` (ids)."""
    notebook = _Builder(node, exported if exported is not None else set()).build()
    nbformat.validate(notebook)
    return notebook


def export_notebooks(top: AgentNode, out_dir: Path, *, force: bool = False) -> list[Path]:
    """Write a notebook for ``top`` and every agent below it into ``out_dir``.

    An existing notebook is overwritten only with ``force``; nothing is written when one
    would be clobbered. Every problem is a one-line :class:`SessionError` (exit 2)."""
    nodes = top.walk()
    exported = {n.id for n in nodes}
    notebooks = [(n, build_notebook(n, exported)) for n in nodes]  # validate all first
    if out_dir.exists() and not out_dir.is_dir():
        raise SessionError(f"{out_dir} exists and is not a folder")
    paths = [(out_dir / notebook_name(node), notebook) for node, notebook in notebooks]
    existing = [path for path, _ in paths if path.exists() or path.is_symlink()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise SessionError(f"{existing[0]}{more} already exist(s); pass --force to overwrite")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, notebook in paths:
            text = nbformat.writes(notebook)
            write_replacing(path, text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        where = exc.filename or out_dir
        raise SessionError(f"cannot write {where}: {exc.strerror or exc}") from None
    return [path for path, _ in paths]


def write_replacing(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (temp file and rename; the temp file is removed on
    failure), so a full disk never leaves half a notebook or half a JSONL file."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
