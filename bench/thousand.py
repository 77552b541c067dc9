"""``python -m bench --only-thousand [--children N]``: N simultaneous idle sub-agents at depth 1.

One cell starts N children at once (``RLM_MAX_CONCURRENCY`` = N, forked kernels); each runs
one cell and then waits at its final model request until all N are there, so memory is read
while every child has a live, idle kernel; then all answer and the run must finish. Reports
the wall time in the cell, the total PSS of the CLI's process tree, the USS of each child's
kernel and the open-files limit the run had (rlm raises the soft limit to the hard one).
"""

from __future__ import annotations

import resource
import time
from typing import Any

from .run import MIB, Bench

#: The common default soft open-files limit: the run is started with it, as from a login
#: shell, so rlm's own raise to the hard limit is what lets it past ~300 kernels.
COMMON_SOFT = 1024


def _nofile() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    show = lambda v: "unlimited" if v == resource.RLIM_INFINITY else str(v)  # noqa: E731
    return f"soft {show(soft)}, hard {show(hard)}; rlm raises its soft limit to the hard one"


def render(n: int, held: dict[str, Any], elapsed: float) -> list[str]:
    memory = held["memory"]
    lines = ["", f"### {n:,} simultaneous idle sub-agents (depth 1, forked kernels)", ""]
    lines += ["| figure | value |", "|---|---|"]
    lines.append(f"| wall time in the cell (start → all {n:,} answered) | {held['wall']:.1f} s |")
    lines.append(f"| whole run, CLI start → exit | {elapsed:.1f} s |")
    lines.append(
        f"| total PSS of the run's process tree, all idle | {memory['total_pss'] / MIB:,.0f} MiB |"
    )
    lines.append(f"| per child: total PSS / n | {memory['total_pss'] / n / MIB:.1f} MiB |")
    lines.append(
        f"| USS per idle child's kernel (median / max) | {memory['uss_median'] / MIB:.1f} / "
        f"{memory['uss_max'] / MIB:.1f} MiB |"
    )
    lines.append(f"| processes in the tree | {memory['processes']:,} |")
    lines.append(f"| open-files limit rlm was started with | {_nofile()} |")
    return lines


def main_thousand(bench: Bench, n: int) -> list[str]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = COMMON_SOFT if hard == resource.RLIM_INFINITY else min(COMMON_SOFT, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    began = time.perf_counter()
    held = bench.fan_out(n, hold=True)
    return render(n, held, time.perf_counter() - began)
