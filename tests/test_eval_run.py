"""``rlm eval`` end to end: real kernels, real HTTP to the scripted model, the real CLI.

The model script answers some tasks right and some wrong (and fails one request for good),
so the report's scores are known exactly; a re-run resumes (only the failed task runs
again), each task's session carries its ``eval`` tag, and its per-request training records
validate against the documented schema and equal what the model was really sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from rlm.cli.main import main as cli_main
from rlm.eval.specs import build_specs
from rlm.eval.tasks import Task
from rlm.logs.export_train import RequestRecord
from scripted_model import ScriptedModel, delay, fault, ipython, reply

SEED = 7
ARGS = ["--family", "niah,code", "--lengths", "1k", "-n", "2", "--seed", str(SEED)]


def _tasks() -> dict[str, Task]:
    return {spec.id: spec.make() for spec in build_specs(["niah", "code"], "1k", 2, SEED, None)}


def _rlm_key(task: Task) -> str:
    return task.question + "\n\nThe context this question"


def _direct_key(task: Task) -> str:
    return task.context[-40:] + "\n\n" + task.question


def _wrong_letter(gold: str) -> str:
    return "B" if gold != "B" else "C"


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["method"], r["family"]): r for r in json.loads(out)["rows"]}


def test_eval_end_to_end_scores_resume_tags_and_per_request_export(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = _tasks()
    niah0, niah1 = tasks[f"niah-1k-s{SEED}-0"], tasks[f"niah-1k-s{SEED}-1"]
    code0, code1 = tasks[f"code-1k-s{SEED}-0"], tasks[f"code-1k-s{SEED}-1"]
    assert len({_rlm_key(t) for t in tasks.values()}) == 4
    probe = "eval probe: classify "
    # rlm: niah-0 right (after one rlm.llm sub-call), niah-1 wrong, code-0 right, code-1 wrong
    model.script(
        reply(None, ipython(f"print(await rlm.llm({probe!r} + context[:30]))")),
        reply(f"Answer: {niah0.gold}"),
        match=_rlm_key(niah0),
    )
    model.script(reply("sub-call answer"), match=probe)
    model.script(
        reply(None, ipython("print(len(context))")), reply("1234567"), match=_rlm_key(niah1)
    )
    model.script(reply(None, ipython("print(1)")), reply(str(code0.gold)), match=_rlm_key(code0))
    model.script(reply(_wrong_letter(str(code1.gold))), match=_rlm_key(code1))
    # direct: niah-0 right, niah-1 fails for good (a 400), code-0 wrong, code-1 right
    model.script(reply(str(niah0.gold)), match=_direct_key(niah0))
    model.script(fault(400), match=_direct_key(niah1))
    model.script(reply(_wrong_letter(str(code0.gold))), match=_direct_key(code0))
    model.script(reply(f"({code1.gold})"), match=_direct_key(code1))
    results = tmp_path / "results.jsonl"
    common = [*ARGS, "--method", "rlm,direct", "--jobs", "3", "--results", str(results)]

    code, out, err = _eval(capsys, *common, "--json")
    assert code == 1, err  # one task failed for an infrastructure reason
    rows = _rows(out)
    assert {k: (r["n"], r["score"], r["failed"]) for k, r in rows.items()} == {
        ("rlm", "niah"): (2, 0.5, 0),
        ("rlm", "code"): (2, 0.5, 0),
        ("direct", "niah"): (1, 1.0, 1),
        ("direct", "code"): (2, 0.5, 0),
    }
    assert rows[("rlm", "niah")]["sub_calls"] == 0.5
    assert rows[("rlm", "code")]["sub_calls"] == 0
    assert all(r["mean_tokens"] > 0 and r["truncated"] == 0 for r in rows.values())
    assert [k for k in rows] == [
        ("rlm", "niah"),
        ("rlm", "code"),
        ("direct", "niah"),
        ("direct", "code"),
    ]
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 8
    by_key = {(r["method"], r["task_id"]): r for r in lines}
    failed = by_key[("direct", niah1.id)]
    assert (failed["status"], failed["reason"]) == ("failed", "model_error")

    # every session is in the normal tree, tagged with its reward
    for line in lines:
        meta = json.loads((Path(line["session"]) / "meta.json").read_text())
        assert meta["eval"]["example_id"] == line["task_id"]
        assert meta["eval"]["reward"] == line["score"]
        assert meta["eval"]["task"] == line["family"]
        assert meta["eval"]["answer"] == line["gold"]
        assert Path(line["session"]).parent == rlm_env / "sessions"

    # resume: only the failed task runs again (now answered wrongly)
    served = len(model.requests)
    model.script(reply("0000000"), match=_direct_key(niah1))
    code, out, err = _eval(capsys, *common, "--json")
    assert code == 0, err
    assert len(model.requests) == served + 1
    assert _rows(out)[("direct", "niah")]["n"] == 2
    assert _rows(out)[("direct", "niah")]["score"] == 0.5
    assert "7 task(s) already in the results file" in err
    # and again: nothing runs; the Markdown table and the plot come from the file alone
    served = len(model.requests)
    png = tmp_path / "plot.png"
    code, out, err = _eval(capsys, *common, "--plot", str(png))
    assert code == 0, err
    assert len(model.requests) == served
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| rlm | niah | 1k | 2 | 50.0 |" in out
    assert "| direct | code | 1k | 2 | 50.0 |" in out

    # per-request training records of the rlm niah-0 session: two turns and one sub-call
    session = Path(by_key[("rlm", niah0.id)]["session"])
    code = cli_main(
        ["sessions", "export", session.name, "--format", "jsonl", "--per-request", "--tree"]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    records = [RequestRecord.model_validate(json.loads(line)) for line in out.splitlines()]
    assert [r.metadata.kind for r in records] == ["turn", "turn", "llm_call"]
    assert all(r.reward == 1.0 and r.answer == niah0.gold and r.task == "niah" for r in records)
    assert all(r.example_id == niah0.id and r.weight == 1 for r in records)
    sent = model.requests_for(_rlm_key(niah0))
    assert [r.prompt for r in records[:2]] == [body["messages"] for body in sent]
    assert [r.tools for r in records[:2]] == [body["tools"] for body in sent]
    assert records[1].completion == [{"role": "assistant", "content": f"Answer: {niah0.gold}"}]
    assert records[2].prompt == model.requests_for(probe)[0]["messages"]
    assert records[2].completion[0]["content"] == "sub-call answer"

    # every eval session at once: 9 are tagged, 8 have a reply (the failed request has none)
    code = cli_main(["sessions", "export", "--eval", "--format", "jsonl", "--per-request"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [RequestRecord.model_validate(json.loads(line)) for line in out.splitlines()]
    tagged = [
        p
        for p in (rlm_env / "sessions").iterdir()
        if "eval" in json.loads((p / "meta.json").read_text())
    ]
    assert len(tagged) == 9
    assert len({r.metadata.session_id for r in records}) == 8
    assert {r.example_id for r in records} == set(tasks)
    assert all(r.info and r.info["status"] == "scored" for r in records)
    code = cli_main(["sessions", "export", "--format", "jsonl"])
    _, err = capsys.readouterr()
    assert code == 2 and "export needs a session <id> (or --eval" in err


def test_timeout_scores_zero_and_rlm_no_subcalls_refuses_llm(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (spec,) = build_specs(["niah"], "1k", 1, SEED, None)
    task = spec.make()
    model.script(delay(30, reply("too late")), match=_direct_key(task))
    model.script(
        reply(None, ipython("try:\n    await rlm.llm('x')\nexcept Exception as e:\n    print(e)")),
        reply(str(task.gold)),
        match=_rlm_key(task).replace("\n\nThe context this question", ""),
    )
    results = tmp_path / "r.jsonl"
    args = ["--family", "niah", "--lengths", "1k", "-n", "1", "--seed", str(SEED)]
    args += ["--results", str(results), "--json"]
    code, out, err = _eval(capsys, *args, "--method", "direct", "--timeout", "1")
    assert code == 0, err
    row = _rows(out)[("direct", "niah")]
    assert (row["n"], row["score"], row["failed"]) == (1, 0.0, 0)
    code, out, err = _eval(capsys, *args, "--method", "rlm-no-subcalls")
    assert code == 0, err
    assert _rows(out)[("rlm-no-subcalls", "niah")]["score"] == 1.0
    by_method = {r["method"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert by_method["direct"]["reason"] == "timeout"
    assert by_method["direct"]["wall"] < 10
    assert by_method["rlm-no-subcalls"]["sub_calls"] == 0
    # the no-subcalls agent's cell got the refusal, and its prompt did not offer rlm.llm
    sent = model.requests_for(_rlm_key(task).replace("\n\nThe context this question", ""))
    assert "RLM_MAX_DEPTH is 0" in json.dumps(sent[-1]["messages"])
    assert "rlm.llm_batch" not in sent[0]["messages"][1]["content"]


def test_direct_truncates_to_the_context_window(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (spec,) = build_specs(["niah"], "8k", 1, SEED, None)
    task = spec.make()
    model.script(reply(str(task.gold)), match="\n\n" + task.question)
    code, out, err = _eval(
        capsys,
        "--family",
        "niah",
        "--lengths",
        "8k",
        "-n",
        "1",
        "--seed",
        str(SEED),
        "--method",
        "direct",
        "--context-window",
        "4096",
        "--results",
        str(tmp_path / "r.jsonl"),
        "--json",
    )
    assert code == 0, err
    assert _rows(out)[("direct", "niah")]["truncated"] == 1
    (body,) = model.requests
    sent = body["messages"][-1]["content"]
    assert "characters cut here to fit the context window" in sent
    assert len(sent) <= (4096 - 1024) * 4 + 200 + len(task.question)


def test_plot_without_matplotlib_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    results = tmp_path / "r.jsonl"
    code, out, err = _eval(
        capsys,
        "--family",
        "niah",
        "--lengths",
        "1k",
        "-n",
        "1",
        "--plot",
        "x.png",
        "--results",
        str(results),
    )
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        "rlm eval: --plot needs matplotlib: pip install 'rlm[plot]' (or pip install matplotlib)"
    ]
    assert not results.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--family", "nope"], "--family: unknown nope"),
        (["--method", "magic"], "--method: unknown magic"),
        (["--lengths", "12q"], "--lengths: '12q' is not a length"),
        (["--family", "oolong"], "--family oolong reads its data from --data-dir"),
        (["--max-turns", "0"], "--max-turns"),
        (["--results", "/proc/no/such/r.jsonl"], "--results: cannot write"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], rlm_env: Path
) -> None:
    if "--results" not in args:
        args = [*args, "--results", "r.jsonl"]
    code, out, err = _eval(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    code, out, _ = _eval(capsys, *args, "--json")
    assert code == 2 and message in json.loads(out)["error"]


def test_argparse_usage_error_returns_2_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _eval(capsys, "--jobs", "many")
    assert code == 2 and out == "" and "invalid int value: 'many'" in err


class Oracle:
    """A method that reads the gold answer: no model, no session (the registry's test)."""

    name = "oracle"
    description = "answers with the gold answer"

    async def run(self, task: Task, settings: Any, out: Any) -> None:
        gold = task.gold
        out.answer = "\n".join(f"({p})" for p in gold) if isinstance(gold, list) else gold
        out.reason = "answer"


def test_a_registered_method_runs_every_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlm.eval.methods as methods

    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))  # undone after the test
    methods.register(Oracle())
    code, out, err = _eval(
        capsys,
        "--method",
        "oracle",
        "--lengths",
        "1k,2k",
        "-n",
        "2",
        "--results",
        str(tmp_path / "r.jsonl"),
        "--json",
    )
    assert code == 0, err
    table = json.loads(out)["rows"]
    assert [(r["family"], r["length"]) for r in table] == [
        (f, n) for f in ("niah", "aggregate", "pairs", "code") for n in ("1k", "2k")
    ]
    assert all(r["n"] == 2 and r["score"] == 1.0 for r in table)


def test_token_budget_ends_a_task_as_a_scored_zero(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (spec,) = build_specs(["niah"], "1k", 1, SEED, None)
    task = spec.make()
    key = _rlm_key(task).replace("\n\nThe context this question", "")
    model.script(reply(None, ipython("print(1)"), usage=(10, 50)), match=key)
    results = tmp_path / "r.jsonl"
    code, out, err = _eval(
        capsys,
        "--family",
        "niah",
        "--lengths",
        "1k",
        "-n",
        "1",
        "--seed",
        str(SEED),
        "--method",
        "rlm-no-subcalls",
        "--max-tokens",
        "20",
        "--results",
        str(results),
        "--json",
    )
    assert code == 0, err
    (line,) = map(json.loads, results.read_text().splitlines())
    assert (line["status"], line["reason"], line["score"]) == ("scored", "token_budget", 0.0)
    assert _rows(out)[("rlm-no-subcalls", "niah")]["n"] == 1
