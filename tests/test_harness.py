"""rlm as an RL harness runs it: PrimeIntellect's ``verifiers`` rlm harness, step by step.

The harness uploads a checkout of the repository, runs its ``install.sh`` with the task's
skills in a skills folder, then, in the task's working directory::

    export RLM_MODEL=$OPENAI_MODEL OPENAI_API_KEY=... OPENAI_BASE_URL=<its proxy>/v1
    export RLM_APPEND_TO_SYSTEM_PROMPT="$(cat /task/append_to_system_prompt.txt)"
    rlm "$(cat /task/instruction.md)"

and reads ``.rlm/sessions/*/meta.json`` (the first match), key ``metrics``, keeping every
number as ``rlm_<key>``. This test does the same with a fresh ``git clone`` of this repository
(plus the uncommitted changes of the working tree, so it tests what is on disk), one private
``install.sh`` run and the scripted model behind ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import rlm
from conftest import read_meta, sessions
from scripted_model import ScriptedModel, ipython, reply
from test_install import FIXTURES

# install.sh (uv builds rlm from the clone, about 10-60 s with uv's cache) runs in the test.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION = "Greet Ada loudly with the greet skill, then answer with the number of letters."
APPENDED = "Always end your answer with the word VERIFIED."
CELL = (
    "import os\n"
    "print(await greet(names=['Ada'], shout=True))\n"
    "names = ('OPENAI_API_KEY', 'OPENAI_BASE_URL', 'RLM_API_KEY', 'RLM_BASE_URL')\n"
    "print(sorted(k for k in os.environ if k in names), os.environ.get('RLM_MODEL'))"
)


def fresh_checkout(target: Path) -> Path:
    """``git clone`` of this repository at HEAD, with the working tree's uncommitted changes
    to tracked files applied (a harness clones a commit; a developer tests what is on disk)."""
    head = _git(ROOT, "rev-parse", "HEAD").strip()
    subprocess.run(
        ["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(target)],
        check=True,
        timeout=120,
    )
    _git(target, "checkout", "--quiet", head)
    diff = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "HEAD", "--binary"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    if diff:
        subprocess.run(
            ["git", "-C", str(target), "apply", "--whitespace=nowarn"],
            input=diff,
            check=True,
            timeout=60,
        )
    return target


def _git(where: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def harness_metrics(workdir: Path) -> dict[str, float]:
    """What ``verifiers`` collects: the first ``.rlm/sessions/*/meta.json``, its ``metrics``,
    numbers only, each key prefixed with ``rlm_``."""
    (path,) = sorted(glob.glob(str(workdir / ".rlm" / "sessions" / "*" / "meta.json")))[:1]
    data = json.loads(Path(path).read_text()).get("metrics", {})
    return {f"rlm_{k}": float(v) for k, v in data.items() if isinstance(v, (int, float))}


def test_a_fresh_checkout_installs_and_runs_as_the_verifiers_harness_runs_it(
    tmp_path: Path, model: ScriptedModel
) -> None:
    checkout = fresh_checkout(tmp_path / "rlm-checkout")
    task = tmp_path / "task"
    skills = task / "rlm-skills"
    skills.mkdir(parents=True)
    shutil.copytree(FIXTURES / "greet", skills / "greet")
    (task / "instruction.md").write_text(INSTRUCTION + "\n")
    (task / "append_to_system_prompt.txt").write_text(APPENDED)
    bin_dir = tmp_path / "bin"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    base.pop("VIRTUAL_ENV", None)
    install_env = base | {
        "UV_TOOL_DIR": str(tmp_path / "tools"),
        "UV_TOOL_BIN_DIR": str(bin_dir),
        "RLM_SKILLS_DIR": str(skills),
    }
    install = subprocess.run(
        ["bash", str(checkout / "install.sh")],
        capture_output=True,
        text=True,
        env=install_env,
        timeout=400,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (bin_dir / "rlm").is_file() and (bin_dir / "greet").is_file()

    model.script(reply(None, ipython(CELL)), reply("3 letters. VERIFIED"))
    workdir = tmp_path / "testbed"
    workdir.mkdir()
    run_env = base | {
        "PATH": f"{bin_dir}:{base.get('PATH', '/usr/bin:/bin')}",
        "OPENAI_MODEL": "policy-model",
        "OPENAI_API_KEY": "sk-harness-secret",
        "OPENAI_BASE_URL": model.base_url,
        "TASK": str(task),
    }
    script = (
        "set -eo pipefail\n"
        "export RLM_MODEL=$OPENAI_MODEL\n"
        'export RLM_APPEND_TO_SYSTEM_PROMPT="$(cat "$TASK/append_to_system_prompt.txt")"\n'
        'rlm "$(cat "$TASK/instruction.md")"\n'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=workdir,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3 letters. VERIFIED\n"  # the answer, alone, on stdout

    first = model.requests[0]
    assert first["model"] == "policy-model"
    assert first["messages"][0]["content"].rstrip().endswith(APPENDED)
    assert "`await greet(" in first["messages"][0]["content"]  # the skill is listed
    assert first["messages"][1]["content"] == INSTRUCTION
    (cell_output,) = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
    # the key and the endpoint stay in the orchestrator; the model name is no secret
    assert cell_output.splitlines() == ["HELLO, ADA!", "[] policy-model"]

    metrics = harness_metrics(workdir)
    expected = {
        "rlm_turns": 2.0,
        "rlm_tool_calls": 1.0,
        "rlm_tool_calls_ipython": 1.0,
        "rlm_ipython_cells": 1.0,
        "rlm_ipython_cell_errors": 0.0,
        "rlm_mean_cell_chars": float(round(len(CELL), 1)),
        "rlm_sub_agents": 0.0,
        "rlm_sub_agents_any": 0.0,
        "rlm_llm_calls": 0.0,
        "rlm_compactions": 0.0,
    }
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["rlm_tokens"] == metrics["rlm_tree_tokens"] > 0
    assert metrics["rlm_wall_time"] > 0
    # the key and the endpoint's URL stay out of every file of the session
    for path in (workdir / ".rlm").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "sk-harness-secret" not in text and model.base_url not in text, path


async def test_every_request_says_its_depth_so_a_harness_keeps_only_the_roots(
    model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verifiers drops trajectory steps whose request has ``X-RLM-Depth`` above 0: the
    root's turns are the policy's; sub-agents and ``rlm.llm`` calls are sub-calls."""
    monkeypatch.setenv("RLM_MAX_DEPTH", "2")
    root_cell = "print(await rlm.llm('chunk: top'), await rlm.run('child: go'))"
    child_cell = "print(await rlm.llm('chunk: deep'), await rlm.run('grandchild: go'))"
    model.script(reply(None, ipython(root_cell)), reply("root done"), match="root task")
    model.script(reply(None, ipython(child_cell)), reply("child done"), match="child: go")
    model.script(reply("grandchild done"), match="grandchild: go")
    model.script(reply("a"), reply("b"), match="chunk:")
    assert await rlm.run("root task") == "root done"
    seen = sorted(
        (first_user(body), headers.get("x-rlm-depth"))
        for body, headers in zip(model.requests, model.headers, strict=True)
    )
    assert seen == [
        ("child: go", "1"),
        ("child: go", "1"),
        ("chunk: deep", "2"),
        ("chunk: top", "1"),
        ("grandchild: go", "2"),
        ("root task", "0"),
        ("root task", "0"),
    ]
    # and the metrics count the sub-agents of the whole subtree at every level
    (root,) = sessions(rlm_env)
    (child,) = root.glob("sub-*")
    assert read_meta(root)["metrics"]["sub_agents"] == 2
    assert read_meta(child)["metrics"]["sub_agents"] == 1
    assert read_meta(root)["metrics"]["llm_calls"] == 1  # its own cells' calls only


def first_user(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")
