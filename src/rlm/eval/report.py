"""The report: one row per method × family × length, as Markdown, JSON or a PNG plot.

Columns: ``n`` tasks scored, ``score`` (mean, in percent, as the paper reports it),
``tokens`` (mean prompt + completion tokens of a task's whole tree, sub-calls included),
``cost`` (dollars of all its tasks, shown only when a model is priced with ``RLM_PRICES``),
``wall`` (mean seconds per task), ``sub-calls`` and ``sub-agents`` (means per task),
``truncated`` (``direct`` tasks whose context was cut) and ``failed`` (tasks that failed for
an infrastructure reason; they are left out of the other columns and run again on resume).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlm.errors import ConfigError
from rlm.eval.results import ResultStatus, TaskResult

__all__ = ["Row", "check_plot", "markdown", "plot", "rows"]


class Row(BaseModel):
    """One line of the table (and one object of ``--json``'s ``rows``)."""

    method: str
    family: str
    length: str
    tokens: int
    """The length in tokens (for sorting and plotting)."""
    n: int
    score: float | None
    """Mean score in [0, 1]; ``None`` when every task of the row failed."""
    mean_tokens: float
    cost: float
    wall: float
    sub_calls: float
    sub_agents: float
    truncated: int
    failed: int


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def rows(results: Iterable[TaskResult], order: list[str] | None = None) -> list[Row]:
    """Group results by method, family and length; methods in ``order`` (as given on the
    command line), then families in order of appearance and lengths from short to long."""
    groups: dict[tuple[str, str, str], list[TaskResult]] = {}
    tokens: dict[tuple[str, str, str], int] = {}
    for result in results:
        key = (result.method, result.family, result.length)
        groups.setdefault(key, []).append(result)
        tokens[key] = max(tokens.get(key, 0), result.tokens)
    families = list(dict.fromkeys(key[1] for key in groups))
    methods = list(dict.fromkeys([*(order or []), *(key[0] for key in groups)]))
    out = []
    for key in sorted(
        groups, key=lambda k: (methods.index(k[0]), families.index(k[1]), tokens[k], k[2])
    ):
        members = groups[key]
        scored = [r for r in members if r.status is ResultStatus.SCORED]
        out.append(
            Row(
                method=key[0],
                family=key[1],
                length=key[2],
                tokens=tokens[key],
                n=len(scored),
                score=_mean([r.score for r in scored]) if scored else None,
                mean_tokens=_mean([r.prompt_tokens + r.completion_tokens for r in scored]),
                cost=round(sum(r.cost for r in scored), 6),
                wall=_mean([r.wall for r in scored]),
                sub_calls=_mean([r.sub_calls for r in scored]),
                sub_agents=_mean([r.sub_agents for r in scored]),
                truncated=sum(1 for r in scored if r.truncated),
                failed=len(members) - len(scored),
            )
        )
    return out


def _number(value: float) -> str:
    return f"{value:.1f}" if value != int(value) else str(int(value))


def markdown(table: list[Row]) -> str:
    """The table as GitHub Markdown; the cost column only when some cost is known."""
    priced = any(row.cost > 0 for row in table)
    head = ["method", "family", "length", "n", "score", "tokens"]
    head += ["cost $"] if priced else []
    head += ["wall s", "sub-calls", "sub-agents", "truncated", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [
            row.method,
            row.family,
            row.length,
            str(row.n),
            "-" if row.score is None else f"{100 * row.score:.1f}",
            f"{row.mean_tokens:,.0f}",
        ]
        cells += [f"{row.cost:.4f}"] if priced else []
        cells += [
            f"{row.wall:.1f}",
            _number(round(row.sub_calls, 1)),
            _number(round(row.sub_agents, 1)),
            str(row.truncated),
            str(row.failed),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_plot() -> None:
    """Fail before any task runs when ``--plot`` cannot work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib: pip install 'rlm[plot]' (or pip install matplotlib)"
        ) from None


def plot(table: list[Row], path: Path) -> None:
    """Score against context length, one panel per family, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(row.family for row in table)) or ["-"]
    figure, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 3.6), squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        by_method: dict[str, list[Row]] = {}
        for row in table:
            if row.family == family and row.score is not None:
                by_method.setdefault(row.method, []).append(row)
        for method, points in by_method.items():
            points.sort(key=lambda r: r.tokens)
            axis.plot(
                [max(1, r.tokens) for r in points],
                [100 * (r.score or 0.0) for r in points],
                marker="o",
                label=method,
            )
        axis.set_xscale("log", base=2)
        ticks = {max(1, r.tokens): r.length for r in table if r.family == family}
        axis.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
        axis.minorticks_off()
        axis.set_title(family)
        axis.set_xlabel("context length (tokens)")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (%)")
    axes[0][-1].legend()
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    except OSError as exc:
        raise ConfigError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)


def as_json(table: list[Row], results: Path) -> dict[str, Any]:
    return {"rows": [row.model_dump() for row in table], "results": str(results)}
