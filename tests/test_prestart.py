"""The root kernel the CLI starts at process start (rlm.kernels.prestart): the run adopts it
(first cell sooner), it never carries credentials, and an early exit leaves no process. A run
that may spawn sub-agents forks it from the zygote the CLI starts at once (one interpreter
fewer), and its sub-agents fork from that same zygote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rlm.kernels import prestart
from rlm.zygote import preload_modules
from scripted_model import ScriptedModel, ipython, reply

#: The first cell: what its kernel process was started with, and what the agent sees.
_PROBE_CELL = """
import json, os
def parent(read):
    try:
        return read(os.getppid())
    except OSError:  # hidden by a sandbox
        return ""
json.dump({
    "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace"),
    "environ": open("/proc/self/environ", "rb").read().decode(errors="replace"),
    "cwd": os.getcwd(),
    "rlm_vars": sorted(k for k in os.environ if k.startswith("RLM_")),
    "underscore": repr(globals().get("_", "")),
    "parent_cmdline": parent(lambda p: open(f"/proc/{p}/cmdline", "rb").read().decode()),
    "parent_cwd": parent(lambda p: os.readlink(f"/proc/{p}/cwd")),
    "ppid": os.getppid(),
    "kernel_class": type(get_ipython().kernel).__name__,
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


def _run(
    tmp_path: Path, *args: str, child: bool = False, **extra: str
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run one agent whose first cell records its kernel in ``work/cell.json`` (and, with
    ``child``, runs a sub-agent whose cell records its own in ``work/child.json``)."""
    work = tmp_path / "work"
    work.mkdir()
    out = work / "cell.json"  # a sandboxed cell may write only here
    with ScriptedModel() as model:
        code = _PROBE_CELL.replace("OUT", repr(str(out)))
        if child:
            code += "\nprint(await rlm.run('child probe'))"
            child_code = _PROBE_CELL.replace("OUT", repr(str(work / "child.json")))
            model.script(reply(None, ipython(child_code)), reply("child done"), match="child probe")
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
    """Command lines of live processes that name a path inside ``folder`` or run in it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"{cmdline} (in {cwd})")
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


@pytest.mark.parametrize(
    "flags", [[], ["--max-depth", "1"]], ids=["cold-root", "zygote-and-forked-root"]
)
def test_a_usage_error_leaves_no_prestarted_kernel_or_zygote(
    tmp_path: Path, flags: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlm", *flags, "--no-such-flag", "go"],
        capture_output=True,
        text=True,
        env=_env(tmp_path, "http://127.0.0.1:9/v1"),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert _processes_under(tmp_path) == []
    assert not list(tmp_path.glob("rlm-prestart-*"))
    assert not list(tmp_path.glob("rlm-zygote-*"))


def _forked_from_prestarted_zygote(cell: dict) -> bool:
    """Whether the cell's kernel was forked from a zygote the CLI started at process start."""
    return "rlm.zygote.server" in cell["parent_cmdline"] and "rlm-zygote-" in cell["parent_cwd"]


def test_a_run_that_may_spawn_forks_its_root_kernel_from_the_zygote_started_at_cli_start(
    tmp_path: Path,
) -> None:
    result, cell = _run(tmp_path, child=True, RLM_MAX_DEPTH="1")
    assert result.stdout.strip() == "done"
    assert _forked_from_prestarted_zygote(cell), cell
    assert "rlm-prestart-" in cell["cmdline"] or "rlm.zygote.server" in cell["cmdline"]
    assert "RLM_DEPTH" in cell["rlm_vars"], cell
    assert cell["cwd"] == str(tmp_path / "work")
    assert cell["underscore"] == "''", "the prestart's warm-up left its result in the namespace"
    # the sub-agent forks from the same zygote: the run has one
    sub = json.loads((tmp_path / "work" / "child.json").read_text())
    assert sub["ppid"] == cell["ppid"], (sub, cell)
    # and is the same kind of kernel: the app the zygote prepared for every forked kernel
    assert cell["kernel_class"] == sub["kernel_class"] == "ForkedKernel", (sub, cell)
    # the forked kernel's /proc environ is the zygote's: no credentials there either
    assert "sk-prestart-secret" not in cell["environ"]
    assert "sk-openai-secret" not in cell["environ"]
    assert not list(tmp_path.glob("rlm-prestart-*")), "the prestart folder was left behind"
    assert not list(tmp_path.glob("rlm-zygote-*")), "the zygote's folder was left behind"
    assert _processes_under(tmp_path) == []


def test_max_depth_on_the_command_line_also_forks_the_root_kernel(tmp_path: Path) -> None:
    _, cell = _run(tmp_path, "--max-depth", "1")
    assert _forked_from_prestarted_zygote(cell), cell


def test_a_run_without_sub_agents_starts_no_zygote(tmp_path: Path) -> None:
    _, cell = _run(tmp_path, "--max-depth=0", RLM_MAX_DEPTH="1")
    assert "rlm-prestart-" in cell["cmdline"], "the root kernel was not the prestarted one"
    assert "rlm.zygote.server" not in cell["parent_cmdline"], cell


def test_a_zygote_that_fails_at_cli_start_leaves_the_run_on_a_cold_root_kernel(
    tmp_path: Path,
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "rlm_test_boom.py").write_text("raise RuntimeError('boom at import')\n")
    result, cell = _run(
        tmp_path,
        child=True,
        RLM_MAX_DEPTH="1",
        RLM_PRELOAD="rlm_test_boom",
        PYTHONPATH=str(modules),
    )
    assert result.stdout.strip() == "done"
    assert "rlm.zygote.server" not in cell["parent_cmdline"], cell
    assert "ipykernel_launcher" in cell["cmdline"], cell
    sub = json.loads((tmp_path / "work" / "child.json").read_text())
    assert "ipykernel_launcher" in sub["cmdline"], sub  # and its sub-agents start cold too
    assert _processes_under(tmp_path) == []


def test_a_prestarted_zygote_the_run_cannot_use_is_killed_with_its_root_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pre = prestart.prestart(cwd=str(tmp_path), argv=["--max-depth", "1"])
    try:
        assert pre is not None and isinstance(pre.process, prestart.Forked)
        assert pre.process.done.wait(60) and pre.process.error is None, pre.process.error
        assert pre.process.poll() is None  # the root kernel was forked and lives
        # a launcher whose kernels get another environment does not adopt it
        other = {**pre.env, "RLM_TEST_OTHER": "1"}
        assert prestart.take_zygote(other, preload_modules(pre.env)) is None
        assert prestart.take(pre.env) is None, "the root kernel outlived its zygote"
        assert _processes_under(tmp_path) == []
        assert list(tmp_path.iterdir()) == []  # both folders removed
    finally:
        prestart.discard()


def test_a_forked_root_kernel_that_dies_is_started_again(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "cell.json"
    with ScriptedModel() as model:
        model.script(
            reply(None, ipython("import os; os._exit(1)")),
            reply(None, ipython(_PROBE_CELL.replace("OUT", repr(str(out))))),
            reply("done"),
        )
        result = subprocess.run(
            [sys.executable, "-m", "rlm", "-q", "go"],
            capture_output=True,
            text=True,
            env=_env(tmp_path, model.base_url, RLM_MAX_DEPTH="1"),
            cwd=work,
            timeout=120,
        )
        died = model.requests[1]["messages"][-1]["content"]
    assert result.returncode == 0, result.stderr
    assert "restart" in died.lower(), died
    cell = json.loads(out.read_text())
    assert "RLM_DEPTH" in cell["rlm_vars"] and cell["cwd"] == str(work), cell
    assert _forked_from_prestarted_zygote(cell), cell  # forked again from the same zygote
    assert _processes_under(tmp_path) == []
