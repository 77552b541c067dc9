"""Which tasks a command line selects: families × lengths × ``-n``, by id, built later."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from rlm.errors import ConfigError
from rlm.eval.codegen import code
from rlm.eval.datasets import DATA_FAMILIES, load_tasks
from rlm.eval.families import FAMILIES, Generator
from rlm.eval.runner import TaskSpec
from rlm.eval.tasks import Task, format_length, parse_lengths

__all__ = ["BUILTIN", "build_specs"]

#: The generated families, in the order the report lists them.
BUILTIN: dict[str, Generator] = {**FAMILIES, "code": code}


def _given(task: Task) -> Task:
    return task


def build_specs(
    families: list[str], lengths: str, n: int, seed: int, data_dir: Path | None
) -> list[TaskSpec]:
    """The selected tasks, family by family, length by length, index by index."""
    known = [*BUILTIN, *DATA_FAMILIES]
    unknown = [f for f in families if f not in known]
    if unknown or not families:
        raise ConfigError(
            f"--family: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    tokens = parse_lengths(lengths)
    specs: list[TaskSpec] = []
    for family in dict.fromkeys(families):
        if family in DATA_FAMILIES:
            if data_dir is None:
                raise ConfigError(f"--family {family} reads its data from --data-dir DIR")
            for task in load_tasks(family, data_dir, tokens, n):
                specs.append(
                    TaskSpec(task.id, family, task.length, task.tokens, partial(_given, task))
                )
            continue
        make = BUILTIN[family]
        for length in tokens:
            for index in range(n):
                specs.append(
                    TaskSpec(
                        f"{family}-{format_length(length)}-s{seed}-{index}",
                        family,
                        format_length(length),
                        length,
                        partial(make, seed, length, index),
                    )
                )
    return specs
