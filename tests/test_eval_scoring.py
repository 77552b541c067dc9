"""The scorers against hand-computed values, and the --data-dir loaders on small files in
the documented format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm.errors import ConfigError
from rlm.eval.datasets import load_tasks
from rlm.eval.report import markdown, rows
from rlm.eval.results import ResultStatus, TaskResult
from rlm.eval.scoring import choice_letter, f1_pairs, numeric_score, score
from rlm.eval.tasks import Scorer, Task


def _task(scorer: Scorer, gold: str | list[str]) -> Task:
    return Task(
        id="t",
        family="f",
        length="1k",
        tokens=1024,
        context="",
        question="q",
        gold=gold,
        scorer=scorer,
    )


@pytest.mark.parametrize(
    ("answer", "gold", "want"),
    [
        ("12", 10, 0.5625),  # 0.75 ** 2
        ("Answer: 7", 10, 0.421875),  # 0.75 ** 3
        ("I count 3 animals, so the answer is 10.", 10, 1.0),  # the number after "answer is"
        ("1,204 records", 1204, 1.0),
        ("there are 4 of them, maybe 5", 5, 1.0),  # the last number
        ("none", 3, 0.0),
    ],
)
def test_numeric_is_075_to_the_distance(answer: str, gold: float, want: float) -> None:
    assert numeric_score(answer, gold) == pytest.approx(want)


def test_pairs_f1_by_hand() -> None:
    gold = ["1,2", "3,4", "5,6"]
    # 2 of 3 answered pairs right, 2 of 3 gold pairs found: P = R = 2/3, F1 = 2/3
    assert f1_pairs("(2, 1)\n(3,4)\n(7, 8)", gold) == pytest.approx(2 / 3)
    # 1 right of 1 answered, 1 of 3 found: P = 1, R = 1/3, F1 = 0.5
    assert f1_pairs("(5, 6)", gold) == pytest.approx(0.5)
    assert f1_pairs("(1,2) (3,4) (5,6)", gold) == 1.0
    assert f1_pairs("NONE", gold) == 0.0
    assert f1_pairs("NONE", []) == 1.0
    assert f1_pairs("(1, 2)", []) == 0.0
    assert f1_pairs("(4, 4)", ["4,5"]) == 0.0  # a user paired with itself is no pair


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("The answer is (A) because run() returns 219.", "A"),
        ("**Answer: c**", "C"),
        ("A\n\nrun() returns 12", "A"),
        ("It returns 219", None),
    ],
)
def test_choice_letter(answer: str, want: str | None) -> None:
    assert choice_letter(answer) == want


def test_score_dispatch_and_exact_normalisation() -> None:
    exact = _task(Scorer.EXACT, "more common than")
    assert score(exact, "**More common than**.") == 1.0
    assert score(exact, "Counting the records...\nAnswer: more common than") == 1.0
    assert score(exact, "less common than") == 0.0
    assert score(exact, None) == 0.0
    assert score(_task(Scorer.EXACT, "4546525"), "`4546525`") == 1.0
    assert score(_task(Scorer.NUMERIC, "8"), "6") == pytest.approx(0.5625)
    assert score(_task(Scorer.CHOICE, "B"), "b") == 0.0  # letters are capitals
    assert score(_task(Scorer.CHOICE, "B"), "B") == 1.0
    assert score(_task(Scorer.PAIRS_F1, ["1,2"]), "(1, 2)") == 1.0


def _result(method: str, family: str, value: float, **extra: object) -> TaskResult:
    return TaskResult.model_validate(
        {
            "method": method,
            "task_id": f"{family}-{value}",
            "family": family,
            "length": "8k",
            "tokens": 8192,
            "status": "scored",
            "score": value,
            "gold": "x",
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "wall": 2.0,
            **extra,
        }
    )


def test_report_rows_means_and_failed_left_out() -> None:
    table = rows(
        [
            _result("direct", "niah", 1.0, cost=0.5, truncated=True),
            _result("direct", "niah", 0.0, cost=0.25),
            _result("direct", "niah", 0.0, status=ResultStatus.FAILED),
            _result("rlm", "niah", 0.5, sub_calls=4, sub_agents=1),
        ],
        ["rlm", "direct"],
    )
    assert [(r.method, r.n, r.score, r.failed, r.truncated) for r in table] == [
        ("rlm", 1, 0.5, 0, 0),
        ("direct", 2, 0.5, 1, 1),
    ]
    assert table[1].cost == 0.75 and table[1].mean_tokens == 120 and table[0].sub_calls == 4
    text = markdown(table)
    assert "| rlm | niah | 8k | 1 | 50.0 | 120 | 0.0000 | 2.0 | 4 | 1 | 0 | 0 |" in text
    assert "cost $" in text
    assert "cost $" not in markdown(rows([_result("rlm", "niah", 1.0)]))


def test_oolong_and_longbench_loaders(tmp_path: Path) -> None:
    (tmp_path / "oolong").mkdir()
    rows_ = [
        {
            "id": 1,
            "context_len": 1024,
            "context_window_text": "ctx one",
            "question": "How many?",
            "answer": "[5]",
            "answer_type": "ANSWER_TYPE.NUMERIC",
            "task": "counting",
        },
        {
            "id": 2,
            "context_len": 1024,
            "context_window_text": "ctx two",
            "question": "Which?",
            "answer": "['abbreviation']",
            "answer_type": "ANSWER_TYPE.LABEL",
            "task": "most_freq",
        },
        {
            "id": 3,
            "context_len": 2048,
            "context_window_text": "ctx three",
            "question": "Q",
            "answer": "x",
            "answer_type": "ANSWER_TYPE.LABEL",
        },
    ]
    (tmp_path / "oolong" / "test.jsonl").write_text("\n".join(map(json.dumps, rows_)) + "\n")
    tasks = load_tasks("oolong", tmp_path, [1024], 5)
    assert [(t.id, t.length, t.gold, t.scorer) for t in tasks] == [
        ("oolong-1", "1k", "5", Scorer.NUMERIC),
        ("oolong-2", "1k", "abbreviation", Scorer.EXACT),
    ]
    assert tasks[0].context == "ctx one" and tasks[0].question == "How many?"
    assert len(load_tasks("oolong", tmp_path, [1024, 2048], 1)) == 2  # -n per length

    (tmp_path / "longbench-v2").mkdir()
    item = {
        "_id": "abc",
        "domain": "Code",
        "length": "short",
        "question": "What?",
        "choice_A": "one",
        "choice_B": "two",
        "choice_C": "three",
        "choice_D": "four",
        "answer": "C",
        "context": "x" * 400,
    }
    (tmp_path / "longbench-v2" / "data.json").write_text(json.dumps([item]))
    (task,) = load_tasks("longbench-v2", tmp_path, [8192], 3)
    assert (task.id, task.length, task.gold, task.scorer, task.tokens) == (
        "longbench-v2-abc",
        "short",
        "C",
        Scorer.CHOICE,
        100,
    )
    assert "C. three" in task.question and score(task, "(C)") == 1.0

    (tmp_path / "longbench-v2" / "data.json").write_text(json.dumps([{"question": "x"}]))
    with pytest.raises(ConfigError, match="lacks choice_A"):
        load_tasks("longbench-v2", tmp_path, None, 1)
    with pytest.raises(ConfigError, match="is not a folder"):
        load_tasks("oolong", tmp_path / "missing", None, 1)
