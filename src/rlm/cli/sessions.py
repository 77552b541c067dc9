"""``rlm sessions``: browse and export the session logs under ``$RLM_HOME/sessions``.

::

    rlm sessions list                         newest first, one line per session
    rlm sessions tree <id>                    the call tree of one session
    rlm sessions show <id> [--agent PATH]     one agent's conversation; --raw: its JSONL
    rlm sessions export <id> --format ipynb -o DIR     one notebook per agent (--force)
    rlm sessions export <id> --format jsonl -o FILE    training records
    rlm sessions export <id> --format jsonl --per-request   one record per model call
    rlm sessions export --eval --format jsonl --per-request --tree   every rlm eval session

``<id>`` is a session id or a unique prefix of one, optionally followed by an agent path
(``<id>/sub-ab12/sub-cd``). Every command takes ``--home`` (default ``$RLM_HOME``, else
``.rlm``) and only reads below it. Exit codes: 0 ok, 2 unknown id or bad usage (one line on
stderr). Invoked by ``rlm.cli.main.main`` as ``main(argv)`` with the words after ``sessions``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from rlm.terminal import safe

__all__ = ["build_parser", "main"]

PROG = "rlm sessions"


class _Usage(Exception):
    """A usage error; argparse would exit, we return 2 from ``main`` instead."""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """Never exits the process: ``main`` is called in-process by ``rlm.cli.main.main``."""

    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{self.prog}: error: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, end="", file=sys.stderr)
        raise _Exit(status)


def build_parser() -> argparse.ArgumentParser:
    home = _Parser(add_help=False)
    home.add_argument(
        "--home",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="root of the session logs (default: $RLM_HOME, else .rlm)",
    )
    parser = _Parser(
        prog=PROG,
        parents=[home],
        description="Browse and export session logs (read-only). Without a command: list.",
        epilog="<id> is a session id or a unique prefix of one; it may go on with an agent "
        "path (<id>/sub-ab12/sub-cd). Set RLM_PRICES (a JSON object or the path of a JSON "
        'file: {"model": {"prompt": $/1M tokens, "completion": $/1M tokens}}) for cost '
        "columns. Exit codes: 0 ok, 2 unknown id or bad usage.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", parents=[home], help="sessions, newest first")
    p.add_argument("-n", "--limit", type=int, default=0, help="show at most N sessions")

    p = sub.add_parser("tree", parents=[home], help="the call tree of a session")
    p.add_argument("id", help="session id (or unique prefix)")

    p = sub.add_parser("show", parents=[home], help="an agent's conversation")
    p.add_argument("id", help="session id (or unique prefix), optionally /agent/path")
    p.add_argument(
        "--agent",
        metavar="PATH",
        help="a sub-agent: sub-3f2a/sub-9c1d (each part may be a unique prefix)",
    )
    p.add_argument("--raw", action="store_true", help="print the agent's messages.jsonl")
    p.add_argument("--system", action="store_true", help="include the full system prompt")
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="highlight code and colour the output (default: only on a terminal)",
    )

    p = sub.add_parser("export", parents=[home], help="notebooks or training records")
    p.add_argument("id", nargs="?", help="session id (or unique prefix), optionally /agent/path")
    p.add_argument("--format", required=True, choices=("ipynb", "jsonl"), dest="fmt")
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="ipynb: a folder (default ./<session-id>); jsonl: a file (default: stdout)",
    )
    p.add_argument("--agent", metavar="PATH", help="start from this sub-agent")
    p.add_argument(
        "--tree",
        action="store_true",
        help="jsonl: a record for every agent of the tree, not only the top one "
        "(ipynb always exports the whole tree)",
    )
    p.add_argument(
        "--only-done", action="store_true", help="jsonl: only agents whose status is done"
    )
    p.add_argument(
        "--per-request",
        action="store_true",
        help="jsonl: one prompt/completion record per model call (turns and rlm.llm calls), "
        "with a weight (0 for cut-off, rolled-back or refused replies) and, for rlm eval "
        "sessions, reward/answer/metrics columns (docs/eval.md)",
    )
    p.add_argument(
        "--eval",
        action="store_true",
        dest="all_eval",
        help="jsonl, without <id>: every session made by rlm eval (tagged in its meta.json), "
        "oldest first",
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="overwrite existing notebooks or JSONL file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from rlm.logs.store import SessionError

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _Exit as exc:
        return exc.status
    except _Usage as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return _dispatch(args)
    except SessionError as exc:
        print(f"{PROG}: {safe(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rlm sessions show --raw | head`: exit 1 quietly, as rich does
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no second error at exit
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from rlm.logs.store import default_home

    home = getattr(args, "home", None)
    home = home.expanduser() if home is not None else default_home()
    command = args.command or "list"
    if command == "list":
        return _list(home, getattr(args, "limit", 0))
    if command == "tree":
        return _tree(home, args.id)
    if command == "show":
        return _show(home, args)
    return _export(home, args)


def _console(*, wide: bool, color: str = "auto") -> Any:
    from rich.console import Console

    force = {"always": True, "never": False}.get(color)
    console = Console(
        file=sys.stdout,
        force_terminal=force,
        no_color=True if color == "never" else None,
        markup=False,
        emoji=False,
        highlight=False,
    )
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        # Piped or captured: no terminal width to fit, so do not cut columns needlessly.
        console.width = 250 if wide else 100
    return console


def _resolve(home: Path, ref: str, agent: str | None) -> Any:
    from rlm.logs.store import find_agent, find_session

    node = find_session(home, ref)
    if agent:
        rel = agent.strip("/")
        prefix = node.root.id + "/"
        rel = rel[len(prefix) :] if rel.startswith(prefix) else rel
        node = find_agent(node, rel)
    return node


def _list(home: Path, limit: int) -> int:
    from rlm.logs.prices import load_prices
    from rlm.logs.render import render_list
    from rlm.logs.store import list_sessions, sessions_dir

    prices = load_prices()
    roots = list_sessions(home)
    if limit > 0:
        roots = roots[:limit]
    if not roots:
        print(f"no sessions in {sessions_dir(home)}", file=sys.stderr)
        return 0
    render_list(_console(wide=True), roots, prices)
    return 0


def _tree(home: Path, ref: str) -> int:
    from rlm.logs.prices import load_prices
    from rlm.logs.render import render_tree

    prices = load_prices()
    render_tree(_console(wide=True), _resolve(home, ref, None), prices)
    return 0


def _show(home: Path, args: argparse.Namespace) -> int:
    from rlm.logs.render import render_show

    node = _resolve(home, args.id, args.agent)
    if args.raw:
        return _raw(node.path / "messages.jsonl")
    render_show(_console(wide=False, color=args.color), node, show_system=args.system)
    return 0


def _raw(path: Path) -> int:
    """The log's lines verbatim; a line that is not JSON (cut off by a kill) is left out."""
    from rlm.logs.store import MAX_LOG_BYTES
    from rlm.safeio import read_regular

    try:
        data = read_regular(path, MAX_LOG_BYTES)
    except OSError as exc:
        print(f"{PROG}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    skipped = 0
    out = sys.stdout
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            json.loads(raw)
        except ValueError:
            skipped += 1
            continue
        out.write(raw.decode("utf-8", errors="replace") + "\n")
    out.flush()
    if skipped:
        print(f"{PROG}: skipped {skipped} unreadable line(s) of {path}", file=sys.stderr)
    return 0


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _export_roots(home: Path, args: argparse.Namespace) -> list[Any]:
    """The agent(s) to export: the one named, or with ``--eval`` every eval session."""
    from rlm.logs.store import SessionError, list_sessions

    if args.all_eval:
        if args.id or args.agent or args.fmt != "jsonl":
            raise SessionError("--eval takes no <id> or --agent, and only --format jsonl")
        roots = [
            r
            for r in list_sessions(home)
            if isinstance((r.meta.model_extra or {}).get("eval"), dict)
        ]
        return list(reversed(roots))
    if not args.id:
        raise SessionError("export needs a session <id> (or --eval for every eval session)")
    return [_resolve(home, args.id, args.agent)]


def _export(home: Path, args: argparse.Namespace) -> int:
    from rlm.logs.store import SessionError, sessions_dir

    nodes = _export_roots(home, args)
    output = Path(args.output).expanduser() if args.output and args.output != "-" else None
    if output is not None and _inside(output, sessions_dir(home)):
        raise SessionError(f"refusing to write into the session logs ({output})")
    if args.fmt == "ipynb":
        from rlm.logs.export_ipynb import export_notebooks

        if args.only_done or args.per_request:
            raise SessionError("--only-done and --per-request apply to --format jsonl only")
        (node,) = nodes
        for path in export_notebooks(node, output or Path(node.session_id), force=args.force):
            print(path)
        return 0
    from rlm.logs.export_train import records, request_records

    make = request_records if args.per_request else records
    lines = [
        json.dumps(record, ensure_ascii=False)
        for top in nodes
        for record in make(top, tree=args.tree, only_done=args.only_done)
    ]
    if output is None:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    else:
        _write_jsonl(output, lines, force=args.force)
        print(f"wrote {len(lines)} record(s) to {output}", file=sys.stderr)
    return 0


def _write_jsonl(output: Path, lines: list[str], *, force: bool) -> None:
    """The records as one file, written whole; an existing file only with ``--force``."""
    from rlm.logs.export_ipynb import write_replacing
    from rlm.logs.store import SessionError

    if output.is_dir():
        raise SessionError(f"{output} is a folder; give a file name for --format jsonl")
    if (output.exists() or output.is_symlink()) and not force:
        raise SessionError(f"{output} already exists; pass --force to overwrite")
    try:
        if output.parent != Path():
            output.parent.mkdir(parents=True, exist_ok=True)
        write_replacing(output, "".join(line + "\n" for line in lines))
    except OSError as exc:
        raise SessionError(
            f"cannot write {exc.filename or output}: {exc.strerror or exc}"
        ) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
