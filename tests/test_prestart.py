"""The root kernel the CLI starts at process start (rlm.kernels.prestart): the run adopts it
(first cell sooner), it never carries credentials, and an early exit leaves no process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scripted_model import ScriptedModel, ipython, reply

#: The first cell: what its kernel process was started with, and what the agent sees.
_PROBE_CELL = """
import json, os
json.dump({
    "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace"),
    "environ": open("/proc/self/environ", "rb").read().decode(errors="replace"),
    "cwd": os.getcwd(),
    "rlm_vars": sorted(k for k in os.environ if k.startswith("RLM_")),
    "underscore": repr(globals().get("_", "")),
}, open(OUT, "w"))
"""


def _env(tmp_path: Path, base_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RLM_") and k not in ("PYTHONSTARTUP", "OPENAI_API_KEY")
    }
    env.update(
        RLM_BASE_URL=base_url,
        RLM_API_KEY="sk-prestart-secret",
        OPENAI_API_KEY="sk-openai-secret",
        RLM_MODEL="scripted",
        RLM_HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path),
        **extra,
    )
    return env


def _run(tmp_path: Path, *args: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "cell.json"  # a sandboxed cell may write only here
    with ScriptedModel() as model:
        code = _PROBE_CELL.replace("OUT", repr(str(out)))
        model.script(reply(None, ipython(code)), reply("done"))
        result = subprocess.run(
            [sys.executable, "-m", "rlm", "-q", *args, "go"],
            capture_output=True,
            text=True,
            env=_env(tmp_path, model.base_url, **extra),
            cwd=work,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text())


def _processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that name a path inside ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


def test_the_root_agent_runs_in_the_kernel_started_at_cli_start(tmp_path: Path) -> None:
    result, cell = _run(tmp_path)
    assert result.stdout.strip() == "done"
    assert "rlm-prestart-" in cell["cmdline"], "the root kernel was not the prestarted one"
    # adopted: the agent's own environment and directory, as for a kernel started for it
    assert "RLM_DEPTH" in cell["rlm_vars"], cell
    assert cell["cwd"] == str(tmp_path / "work")
    assert cell["underscore"] == "''", "the prestart's warm-up left its result in the namespace"
    assert not list(tmp_path.glob("rlm-prestart-*")), "the prestart folder was left behind"


def test_the_prestarted_kernel_was_never_given_credentials(tmp_path: Path) -> None:
    _, cell = _run(tmp_path)
    assert "rlm-prestart-" in cell["cmdline"]
    # /proc/self/environ is what the process was started with, before any adoption
    assert "sk-prestart-secret" not in cell["environ"]
    assert "sk-openai-secret" not in cell["environ"]


def test_a_sandboxed_run_does_not_use_a_prestarted_kernel(tmp_path: Path) -> None:
    _, cell = _run(tmp_path, RLM_SANDBOX="workspace")
    assert "rlm-prestart-" not in cell["cmdline"]


def test_a_usage_error_leaves_no_prestarted_kernel(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "--no-such-flag", "go"],
        capture_output=True,
        text=True,
        env=_env(tmp_path, "http://127.0.0.1:9/v1"),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert _processes_under(tmp_path) == []
    assert not list(tmp_path.glob("rlm-prestart-*"))
