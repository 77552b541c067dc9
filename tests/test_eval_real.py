"""``rlm eval`` against a real OpenAI-compatible server (llama-server, SmolLM2-135M): the
command runs, scores and reports whatever the weak model answers. The scripted-model tests
(test_eval_run.py) check the exact scores; this one checks that nothing in the path relies
on the scripted server."""

from __future__ import annotations

import json
from pathlib import Path

# The real-server fixtures (this module gets a server of its own: they are module-scoped).
from test_real_server import env, rlm, server

__all__ = ["env", "server"]


def test_eval_direct_against_llama_server(env):
    results = Path(env["PWD"]) / "results.jsonl"
    args = ["eval", "--family", "niah", "--lengths", "256", "-n", "1", "--method", "direct"]
    args += ["--results", str(results), "--json", "--max-completion-tokens", "8"]
    done = rlm({**env, "RLM_MAX_TURNS": "1"}, *args)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert (row["method"], row["family"], row["length"], row["n"]) == ("direct", "niah", "256", 1)
    assert row["score"] in (0.0, 1.0) and row["mean_tokens"] > 0
    (line,) = [json.loads(text) for text in results.read_text().splitlines()]
    # a 135M model may answer, or be cut at 8 tokens: a result of the method either way
    assert line["status"] == "scored" and line["reason"] in ("answer", "max_turns"), line
    meta = json.loads((Path(line["session"]) / "meta.json").read_text())
    assert meta["eval"]["reward"] == line["score"] and meta["turns"] == 1
