"""The task contract every family produces, and the context-length notation.

Lengths are in tokens, approximated as characters / 4 (:data:`CHARS_PER_TOKEN`): the
families build text of ``tokens * 4`` characters, whatever tokenizer the endpoint uses, so
the same seed gives the same task for every model. ``8k`` is 8,192 tokens and ``1m`` is
1,048,576 (powers of two, as RULER counts them).
"""

from __future__ import annotations

import re
from enum import Enum

from pydantic import BaseModel, ConfigDict

from rlm.errors import ConfigError

__all__ = [
    "CHARS_PER_TOKEN",
    "Scorer",
    "Task",
    "format_length",
    "parse_length",
    "parse_lengths",
]

#: Characters per token of the length estimate (English prose and code are 3.5-4.5).
CHARS_PER_TOKEN = 4

#: The largest length accepted (16M tokens is 64 MB of text per task).
MAX_TOKENS = 16 << 20

_LENGTH = re.compile(r"(\d+)([km]?)", re.IGNORECASE)


class Scorer(str, Enum):
    """How a task's answer is scored (see :mod:`rlm.eval.scoring`)."""

    EXACT = "exact"
    """1 when the normalised answer equals the gold answer, else 0."""
    NUMERIC = "numeric"
    """``0.75 ** |gold - answer|`` for the last number in the answer (OOLONG)."""
    PAIRS_F1 = "pairs_f1"
    """F1 of the ``(id, id)`` pairs in the answer against the gold pairs (OOLONG-Pairs)."""
    CHOICE = "choice"
    """1 when the chosen letter (A-D) is the gold letter (CodeQA, LongBench-v2)."""

    def __str__(self) -> str:
        return self.value


class Task(BaseModel):
    """One question over one context, with its gold answer."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Unique within a family and seed: ``<family>-<length>-s<seed>-<index>``."""
    family: str
    length: str
    """The length label (``8k``); for loaded data sets, the data set's own bucket."""
    tokens: int
    """The target length in tokens (characters / 4)."""
    context: str
    question: str
    gold: str | list[str]
    """The gold answer: text, or for ``pairs`` the pairs as ``"a,b"`` strings (a < b)."""
    scorer: Scorer
    kind: str = ""
    """The question type within the family (``count``, ``most_common``, ...)."""


def parse_length(text: str) -> int:
    """``"8k"`` -> 8192 tokens, ``"1m"`` -> 1048576, ``"500"`` -> 500."""
    match = _LENGTH.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--lengths: {text!r} is not a length like 8k, 64k or 1m")
    number, unit = int(match.group(1)), match.group(2).lower()
    tokens = number * {"": 1, "k": 1 << 10, "m": 1 << 20}[unit]
    if not 256 <= tokens <= MAX_TOKENS:
        raise ConfigError(f"--lengths: {text!r} is outside 256 tokens .. 16m")
    return tokens


def format_length(tokens: int) -> str:
    """The label of a length: 8192 -> ``8k``, 1048576 -> ``1m``, 300 -> ``300``."""
    if tokens % (1 << 20) == 0:
        return f"{tokens >> 20}m"
    if tokens % (1 << 10) == 0:
        return f"{tokens >> 10}k"
    return str(tokens)


def parse_lengths(text: str) -> list[int]:
    """A comma-separated list of lengths, in the order given, without repeats."""
    out: list[int] = []
    for part in text.split(","):
        if part.strip():
            tokens = parse_length(part)
            if tokens not in out:
                out.append(tokens)
    if not out:
        raise ConfigError("--lengths: give at least one length (8k,64k)")
    return out
