"""Scoring an answer against a task's gold answer, as the RLM paper scores its benchmarks.

- ``exact``: the normalised answer equals the gold (S-NIAH, OOLONG labels and comparisons);
- ``numeric``: ``0.75 ** |gold - answer|`` (OOLONG's numeric questions), on the last number
  of the answer;
- ``pairs_f1``: F1 of the answer's ``(a, b)`` pairs against the gold pairs (OOLONG-Pairs);
- ``choice``: the chosen letter equals the gold letter (CodeQA, LongBench-v2).

Models wrap answers in words, quotes and Markdown, so every scorer first narrows the text to
the answer: the part after a last ``answer:`` / ``answer is`` if there is one. Normalising
lowercases, collapses spaces and strips quotes, backticks, asterisks and end punctuation.
"""

from __future__ import annotations

import re

from rlm.eval.tasks import Scorer, Task

__all__ = ["answer_part", "choice_letter", "f1_pairs", "normalise", "numeric_score", "score"]

_ANSWER_MARK = re.compile(r"(?:final\s+)?answer\s*(?:is|:)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_STRIP = " \t\r\n\"'`*_.,;:!?()[]{}"


def answer_part(text: str) -> str:
    """The text after the last ``answer:`` (or ``answer is``), else the whole text."""
    marks = list(_ANSWER_MARK.finditer(text))
    return text[marks[-1].end() :] if marks else text


def normalise(text: str) -> str:
    return " ".join(text.strip(_STRIP).lower().split()).strip(_STRIP)


def _exact(answer: str, gold: str) -> float:
    want = normalise(gold)
    candidates = {normalise(answer), normalise(answer_part(answer))}
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if lines:
        candidates.add(normalise(lines[-1]))
        candidates.add(normalise(answer_part(lines[-1])))
    return 1.0 if want in candidates else 0.0


def numeric_score(answer: str, gold: float) -> float:
    """``0.75 ** |gold - x|`` for the last number ``x`` of the answer part; 0 without one."""
    numbers = _NUMBER.findall(answer_part(answer))
    if not numbers:
        return 0.0
    value = float(numbers[-1].replace(",", ""))
    return float(0.75 ** abs(gold - value))


def f1_pairs(answer: str, gold: list[str]) -> float:
    """F1 of the unordered pairs ``(a, b)`` found in the answer against the gold pairs
    (``"a,b"`` strings). No gold pair and no pair answered is a perfect 1."""
    want = {frozenset(pair.split(",")) for pair in gold}
    got = {frozenset(m.groups()) for m in _PAIR.finditer(answer) if m.group(1) != m.group(2)}
    if not want and not got:
        return 1.0
    hits = len(want & got)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(got), hits / len(want)
    return 2 * precision * recall / (precision + recall)


_LONE_LETTER = re.compile(r"\(?([A-D])\)?[.:)]?")
_MARKED_LETTER = re.compile(r"answer\s*(?:is|:)?\s*\(?\**([A-D])\b", re.IGNORECASE)
_PAREN_LETTER = re.compile(r"\(([A-D])\)")


def choice_letter(answer: str) -> str | None:
    """The letter chosen: the whole answer (``B``, ``(B)``, ``B.``), or after ``answer``,
    else the first ``(B)``; ``None`` when none is found."""
    text = answer.strip().strip("*`")
    lone = _LONE_LETTER.fullmatch(text)
    if lone:
        return lone.group(1)
    marked = _MARKED_LETTER.findall(text)
    if marked:
        return str(marked[-1]).upper()
    first_line = text.splitlines()[0].strip().strip("*`") if text else ""
    lone = _LONE_LETTER.fullmatch(first_line)
    if lone:
        return lone.group(1)
    paren = _PAREN_LETTER.search(text)
    return paren.group(1) if paren else None


def score(task: Task, answer: str | None) -> float:
    """The task's score of ``answer`` in [0, 1]; no answer scores 0."""
    if answer is None:
        return 0.0
    if task.scorer is Scorer.PAIRS_F1:
        gold = task.gold if isinstance(task.gold, list) else [task.gold]
        return f1_pairs(answer, gold)
    gold_text = task.gold if isinstance(task.gold, str) else ", ".join(task.gold)
    if task.scorer is Scorer.NUMERIC:
        try:
            return numeric_score(answer, float(gold_text))
        except ValueError:
            return _exact(answer, gold_text)
    if task.scorer is Scorer.CHOICE:
        return 1.0 if choice_letter(answer) == gold_text.strip().upper() else 0.0
    return _exact(answer, gold_text)
