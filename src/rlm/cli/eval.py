"""``rlm eval``: generated long-context tasks run by several methods, scored, reported.

::

    rlm eval --family niah,aggregate --lengths 8k,64k --method rlm,direct -n 5

Every setting flag of ``rlm`` applies to each task's session (``--model``, ``--max-cost``
and ``--max-tokens`` as a per-task budget, ``--context-window`` for ``direct``). The report
goes to stdout (Markdown, or one JSON object with ``--json``), progress to stderr. Exit
codes: 0 every selected task has a result, 1 some failed for an infrastructure reason (run
again to retry them), 2 bad usage or configuration, 130/143 interrupted. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlm.cli.flags import add_settings_flags, flag_values
from rlm.config import load_settings
from rlm.errors import ConfigError
from rlm.terminal import safe

__all__ = ["build_parser", "main"]

PROG = "rlm eval"
DEFAULT_RESULTS = "rlm-eval.jsonl"


def build_parser() -> argparse.ArgumentParser:
    from rlm.eval.datasets import DATA_FAMILIES
    from rlm.eval.methods import METHODS
    from rlm.eval.specs import BUILTIN

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run long-context tasks (generated from a seed, or read from --data-dir) "
        "with several methods and report score, tokens, cost and time per method, family and "
        "length. Lengths are tokens estimated as characters / 4. Results are appended to a "
        "JSONL file; a re-run skips the tasks it already has. Every task is a normal session "
        "in $RLM_HOME/sessions, tagged with its score (rlm sessions export --per-request).",
        epilog=f"Families: {', '.join(BUILTIN)} (generated); {', '.join(DATA_FAMILIES)} "
        "(need --data-dir). Methods: "
        + "; ".join(f"{m.name}: {m.description}" for m in METHODS.values())
        + ". Exit codes: 0 ok, 1 some tasks failed (re-run to retry), 2 bad usage.",
    )
    parser.add_argument(
        "--family",
        default=",".join(BUILTIN),
        help="comma-separated families (default: %(default)s)",
    )
    parser.add_argument(
        "--lengths",
        default="8k",
        help="comma-separated context lengths in tokens, like "
        "8k,64k,1m (k = 1024; default: %(default)s)",
    )
    parser.add_argument(
        "--method", default="rlm,direct", help="comma-separated methods (default: %(default)s)"
    )
    parser.add_argument(
        "-n", type=int, default=5, metavar="N", help="tasks per family and length (default: 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    parser.add_argument(
        "--jobs", type=int, default=4, metavar="J", help="tasks run at once (default: 4)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wall-clock limit of one task; a task over it scores 0 (default: 0, none)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(DEFAULT_RESULTS),
        metavar="FILE",
        help=f"results JSONL, appended to and resumed from (default: ./{DEFAULT_RESULTS})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="folder with oolong/ and longbench-v2/ data files (see docs/eval.md)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also write score against length per method as a PNG (needs rlm[plot])",
    )
    parser.add_argument("--list", action="store_true", help="list the selected task ids and exit")
    parser.settings_source = add_settings_flags(parser)  # type: ignore[attr-defined]
    return parser


class _Lines:
    """Progress as one line per finished task (stderr is not a terminal)."""

    def __init__(self) -> None:
        self.total = self.count = 0

    def start(self, total: int, skipped: int) -> None:
        self.total = total
        if skipped:
            print(f"{PROG}: {skipped} task(s) already in the results file", file=sys.stderr)

    def finished(self, result: Any) -> None:
        self.count += 1
        how = f"score {result.score:.2f}" if result.status == "scored" else "FAILED"
        print(
            f"{PROG}: [{self.count}/{self.total}] {result.method} {result.task_id} {how} "
            f"({result.reason}, {result.wall:.1f}s)",
            file=sys.stderr,
            flush=True,
        )

    def stop(self) -> None:
        pass


class _Bar:
    """A rich progress bar on stderr (a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self.task: Any = None
        self.scores: list[float] = []

    def start(self, total: int, skipped: int) -> None:
        self.task = self.bar.add_task(f"eval ({skipped} done before)", total=total)
        self.bar.start()

    def finished(self, result: Any) -> None:
        if result.status == "scored":
            self.scores.append(result.score)
        mean = sum(self.scores) / len(self.scores) if self.scores else 0.0
        self.bar.update(self.task, advance=1, description=f"eval mean score {100 * mean:.1f}")

    def stop(self) -> None:
        self.bar.stop()


def _check_results(path: Path) -> None:
    """The results file must be writable before any task runs (not after an hour of them)."""
    try:
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(f"--results: cannot write {path}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return _main(args, flag_values(parser.settings_source, args))  # type: ignore[attr-defined]
    except ConfigError as exc:
        print(f"{PROG}: {safe(str(exc))}", file=sys.stderr)
        if args.json:  # scripts parse stdout: one JSON object however the command ends
            print(json.dumps({"rows": [], "error": str(exc)}, ensure_ascii=False), flush=True)
        return 2


def _main(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from rlm.cli.main import _run_async, _warn_if_no_key
    from rlm.eval.methods import METHODS
    from rlm.eval.report import as_json, check_plot, markdown, plot, rows
    from rlm.eval.runner import run_eval
    from rlm.eval.specs import build_specs

    settings = load_settings(**overrides)
    names = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ConfigError(
            f"--method: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}"
        )
    if args.n < 1 or args.jobs < 1 or args.timeout < 0:
        raise ConfigError("-n and --jobs must be at least 1 and --timeout not negative")
    families = [f.strip() for f in args.family.split(",") if f.strip()]
    specs = build_specs(families, args.lengths, args.n, args.seed, args.data_dir)
    if args.list:
        for spec in specs:
            print(spec.id)
        return 0
    if args.plot is not None:
        check_plot()
    _check_results(args.results)
    _warn_if_no_key(settings)
    methods = [METHODS[name] for name in dict.fromkeys(names)]
    progress = _Bar() if sys.stderr.isatty() else _Lines()
    results: list[Any] = []

    async def go() -> int:
        results.extend(
            await run_eval(
                specs,
                methods,
                settings,
                args.results,
                jobs=args.jobs,
                timeout=args.timeout or None,
                progress=progress,
            )
        )
        return 0

    code = _run_async(go())
    if code >= 128:
        print(f"{PROG}: interrupted; finished tasks are in {args.results}", file=sys.stderr)
        return code
    table = rows(results, [m.name for m in methods])
    if args.json:
        print(json.dumps(as_json(table, args.results), ensure_ascii=False), flush=True)
    else:
        print(markdown(table), end="", flush=True)
    if args.plot is not None:
        plot(table, args.plot)
        print(f"{PROG}: wrote {args.plot}", file=sys.stderr)
    return 1 if any(row.failed for row in table) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
