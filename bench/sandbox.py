"""The sandbox's cost: spawn latency (fork, pool) and fan-out of 10 and 50 children with
``RLM_SANDBOX=off`` and ``workspace`` (and fork spawns with the kernel limits on), measured
in one run, the variants interleaved round by round so that the machine's drift hits each
alike. ``python -m bench --only-sandbox`` runs this alone and rewrites only the "Sandbox
overhead" section of ``docs/performance.md``; the full run includes it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .run import Bench, Stat, ms, row, secs, spread, table

#: Settings of each variant (on top of the scenario's own).
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"sandbox": "off"},
    "workspace": {"sandbox": "workspace"},
    "workspace + limits": {
        "sandbox": "workspace",
        "kernel_memory": "4G",
        "kernel_processes": "256",
    },
}
HEADING = "## Sandbox overhead"
#: The issue's bar for making ``workspace`` the default: fork spawn within 1.2x of off.
MAX_RATIO = 1.2


def measure(bench: Bench, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Spawn latency and fan-out per variant (see the module docstring)."""
    spawns = 8 if quick else 20
    rounds = 1 if quick else 3
    results: dict[str, Any] = {"load": [os.getloadavg()[0]]}
    for r in range(rounds):
        for mode in ("fork", "pool"):
            variants = (
                VARIANTS if mode == "fork" else {k: VARIANTS[k] for k in ("off", "workspace")}
            )
            for name, extra in variants.items():
                log(f"sandbox {name}: spawn latency, {mode}, round {r + 1}/{rounds}")
                stat, _, _ = bench.spawn_latency(mode, spawns, extra)
                results.setdefault(("spawn", mode, name), Stat()).values.extend(stat.values)
        for n in (10, 50):
            for name in ("off", "workspace"):
                log(f"sandbox {name}: fan-out {n}, round {r + 1}/{rounds}")
                wall = bench.fan_out(n, extra=VARIANTS[name])["wall"]
                results.setdefault(("fan", n, name), Stat()).add(wall)
    results["load"].append(os.getloadavg()[0])
    return results


def render(results: dict[str, Any], command: str) -> list[str]:
    """The section's markdown lines."""
    lines = [
        HEADING,
        "",
        f"Measured by `{command}` on the machine of the results above (a separate run: "
        "compare figures within this section). `off` is `RLM_SANDBOX=off`; `workspace` is the "
        "Landlock sandbox (and, as root, the capability drop); `workspace + limits` adds "
        "`RLM_KERNEL_MEMORY=4G RLM_KERNEL_PROCESSES=256` (the kernel's own cgroups where "
        "writable, else setrlimit). Spawn latency is to the child's first cell having run, as "
        "above; the variants ran interleaved, round by round. The machine is shared: its "
        "1-minute load average was {:.1f} at the start and {:.1f} at the end, so the spread "
        "is wide and only the ratios of this run mean much.".format(*results["load"]),
    ]
    lines += table("figure", "off", "workspace", "workspace + limits", "workspace / off (p50)")
    for mode, label in (("fork", "fork spawn"), ("pool", "pool spawn (fork, 2 warm)")):
        cells = [results.get(("spawn", mode, name)) for name in VARIANTS]
        off, work = cells[0], cells[1]
        assert off is not None and work is not None
        ratio = work.median / off.median
        shown = [spread(c, ms) if c is not None else "–" for c in cells]
        lines.append(row(f"{label}, p50 (min–max)", *shown, f"{ratio:.2f}×"))
    for n in (10, 50):
        off, work = results[("fan", n, "off")], results[("fan", n, "workspace")]
        lines.append(
            row(
                f"fan-out {n}, wall (min–max)",
                spread(off, secs),
                spread(work, secs),
                "–",
                f"{work.median / off.median:.2f}×",
            )
        )
    fork = results[("spawn", "fork", "workspace")].median / results[("spawn", "fork", "off")].median
    met = "within" if fork <= MAX_RATIO else "**not** within"
    lines += [
        "",
        f"Fork spawn under `workspace` is {fork:.2f}× `off`: {met} the {MAX_RATIO}× bar for "
        "making it the default (see [security](security.md#the-workspace-sandbox-rlm_sandboxworkspace)).",
    ]
    return lines


def splice(text: str, section: list[str]) -> str:
    """``text`` (a report) with its sandbox section replaced by ``section`` (or inserted
    before "## How kernels start")."""
    lines = text.splitlines()
    block = [*section, ""]
    if HEADING in lines:
        start = lines.index(HEADING)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = block
    else:
        anchor = "## How kernels start"
        at = lines.index(anchor) if anchor in lines else len(lines)
        lines[at:at] = block
    return "\n".join(lines) + "\n"
