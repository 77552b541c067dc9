"""``--data-dir``: the official OOLONG and LongBench-v2 data, read from files on disk.

Nothing is downloaded. The expected layout (docs/eval.md)::

    DIR/oolong/*.jsonl         rows of oolongbench/oolong-synth (or oolong-real), one JSON
                               object per line: context_window_text, question, answer,
                               answer_type, context_len, and optionally id, dataset, task
    DIR/longbench-v2/*.json    the LongBench-v2 data.json (a JSON list), or *.jsonl rows:
                               _id, question, choice_A..choice_D, answer (a letter),
                               context, length (short|medium|long)

OOLONG rows are grouped by ``context_len`` (its own power-of-two token buckets, labelled as
``--lengths`` labels them: 1024 is ``1k``) and ``--lengths`` selects buckets; LongBench-v2 is
grouped by its ``length`` field and ``--lengths`` does not apply. Within a group the first
``-n`` rows in file order (files sorted by name) are used, so a selection is reproducible.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError
from rlm.eval.tasks import CHARS_PER_TOKEN, Scorer, Task, format_length

__all__ = ["DATA_FAMILIES", "load_longbench", "load_oolong", "load_tasks"]

#: The families read from ``--data-dir``, and the sub-folder each is read from.
DATA_FAMILIES = {"oolong": "oolong", "longbench-v2": "longbench-v2"}


def _rows(folder: Path) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    if not folder.is_dir():
        raise ConfigError(f"--data-dir: {folder} is not a folder (see docs/eval.md)")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl"))
    if not files:
        raise ConfigError(f"--data-dir: no .json or .jsonl file in {folder}")
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                if path.suffix == ".json":
                    data = json.load(handle)
                    if not isinstance(data, list):
                        raise ConfigError(f"--data-dir: {path} is not a JSON list of rows")
                    for number, row in enumerate(data, 1):
                        yield path, number, row
                else:
                    for number, line in enumerate(handle, 1):
                        if line.strip():
                            yield path, number, json.loads(line)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--data-dir: cannot read {path}: {exc}") from None


def _need(row: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ConfigError(f"--data-dir: {where} is not a JSON object")
    missing = [key for key in keys if key not in row]
    if missing:
        raise ConfigError(f"--data-dir: {where} lacks {', '.join(missing)} (see docs/eval.md)")
    return row


def _oolong_answer(value: Any) -> str:
    """OOLONG writes answers as list literals (``"[5]"``, ``"['abbreviation']"``)."""
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(parsed, list) and len(parsed) == 1:
            return str(parsed[0])
    return text


def load_oolong(folder: Path, lengths: list[int] | None, n: int) -> list[Task]:
    taken: dict[int, int] = {}
    tasks: list[Task] = []
    for path, number, raw in _rows(folder):
        row = _need(raw, ("context_window_text", "question", "answer"), f"{path}:{number}")
        context = str(row["context_window_text"])
        tokens = int(row.get("context_len") or len(context) // CHARS_PER_TOKEN)
        if lengths and tokens not in lengths:
            continue
        if taken.get(tokens, 0) >= n:
            continue
        taken[tokens] = taken.get(tokens, 0) + 1
        numeric = "NUMERIC" in str(row.get("answer_type", "")).upper()
        tasks.append(
            Task(
                id=f"oolong-{row.get('id', f'{path.stem}-{number}')}",
                family="oolong",
                length=format_length(tokens),
                tokens=tokens,
                context=context,
                question=str(row["question"]),
                gold=_oolong_answer(row["answer"]),
                scorer=Scorer.NUMERIC if numeric else Scorer.EXACT,
                kind=str(row.get("task", "")),
            )
        )
    return tasks


def load_longbench(folder: Path, n: int) -> list[Task]:
    taken: dict[str, int] = {}
    tasks: list[Task] = []
    keys = ("question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context")
    for path, number, raw in _rows(folder):
        row = _need(raw, keys, f"{path}:{number}")
        bucket = str(row.get("length") or "all")
        if taken.get(bucket, 0) >= n:
            continue
        taken[bucket] = taken.get(bucket, 0) + 1
        context = str(row["context"])
        listed = "\n".join(f"{letter}. {row[f'choice_{letter}']}" for letter in "ABCD")
        tasks.append(
            Task(
                id=f"longbench-v2-{row.get('_id', f'{path.stem}-{number}')}",
                family="longbench-v2",
                length=bucket,
                tokens=len(context) // CHARS_PER_TOKEN,
                context=context,
                question=f"{row['question']}\n{listed}\nAnswer with the letter only.",
                gold=str(row["answer"]).strip().upper(),
                scorer=Scorer.CHOICE,
                kind=str(row.get("domain", "")),
            )
        )
    return tasks


def load_tasks(family: str, data_dir: Path, lengths: list[int] | None, n: int) -> list[Task]:
    folder = data_dir / DATA_FAMILIES[family]
    if family == "oolong":
        return load_oolong(folder, lengths, n)
    return load_longbench(folder, n)
