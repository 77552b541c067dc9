"""``rlm --resume`` reads an earlier session's meta.json through the schema: a meta written
by another rlm version (extra or bad counters) resumes, never ends in a traceback."""

from __future__ import annotations

import json

from conftest import read_meta, sessions
from helpers import run_cli
from scripted_model import reply


def test_resume_with_unknown_usage_keys_and_bad_values(model, rlm_env):
    model.script(reply("first"))
    assert run_cli("first task").returncode == 0
    (folder,) = sessions(rlm_env)
    meta = read_meta(folder)
    meta["usage"] = {"prompt_tokens": 10, "completion_tokens": 4, "cached_tokens": 3}
    meta["usage_total"] = {"prompt_tokens": "many", "completion_tokens": None, "x": 1}
    meta["turns"] = "one"
    (folder / "meta.json").write_text(json.dumps(meta))
    model.script(reply("second"))
    result = run_cli("--resume", folder.name, "and now more")
    assert "Traceback" not in result.stderr
    assert result.returncode == 0 and result.stdout.strip() == "second"
    after = read_meta(folder)
    assert after["status"] == "done"
    # the earlier counters are kept where they were readable, and the new turn is added
    assert after["usage"]["prompt_tokens"] > 10 and after["usage"]["completion_tokens"] > 4


def test_resume_with_an_unreadable_meta_is_one_line(model, rlm_env):
    model.script(reply("first"))
    assert run_cli("first task").returncode == 0
    (folder,) = sessions(rlm_env)
    (folder / "meta.json").write_text("[1, 2]")
    result = run_cli("--resume", folder.name, "more")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("rlm: --resume:") and len(result.stderr.splitlines()) == 1
