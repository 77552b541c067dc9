"""Skills as the agent sees them: pre-imported in the kernel, listed in the prompt, and a
skill that fails to import is left out with the reason in the log."""

from __future__ import annotations

from pathlib import Path

import pytest

import rlm
from conftest import read_log, sessions
from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator
from rlm.zygote import fork_supported
from scripted_model import ipython, reply


def fake_install(site: Path, name: str, init: str) -> None:
    """A real (if minimal) installed distribution ``rlm-skill-<name>`` on ``site``."""
    package = site / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    (package / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {name} for tests\n---\n")
    info = site / f"rlm_skill_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: rlm-skill-{name}\nVersion: 0.1\n")
    (info / "top_level.txt").write_text(name + "\n")


@pytest.fixture
def skill_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    fake_install(
        site,
        "shout",
        "import rlm.skill\n\n"
        "async def run(text: str, times: int = 1) -> str:\n"
        '    """Upper-case text.\n\n    Args:\n        text: What to shout.\n        times: Repeats.\n    """\n'
        "    return ' '.join([text.upper()] * times)\n\n"
        "rlm.skill.make_callable(__name__)\n",
    )
    fake_install(site, "fragile", "raise ImportError('needs a missing library')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # the kernel runs in the same Python
    return site


async def test_skills_are_callable_in_the_kernel_and_listed(model, rlm_env, skill_site):
    model.script(
        reply(None, ipython("print(await shout(text='hi', times=2))\nprint(shout.run.__name__)")),
        reply("shouted"),
    )
    assert await rlm.run("use the skill") == "shouted"
    system = model.requests[0]["messages"][0]["content"]
    assert "`await shout(text: str, times: int = 1) -> str`: shout for tests" in system
    assert str(skill_site / "shout" / "SKILL.md") in system
    assert "fragile" not in system  # failed to import: not offered
    tool = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool == ["HI HI\nrun"]
    failures = [e for e in read_log(sessions(rlm_env)[0]) if e.get("event") == "skill_failed"]
    assert [(e["name"], "needs a missing library" in e["error"]) for e in failures] == [
        ("fragile", True)
    ]


async def test_no_skills_no_section(model, rlm_env):
    model.script(reply("plain"))
    await rlm.run("task")
    assert "Skills" not in model.requests[0]["messages"][0]["content"]


@pytest.mark.parametrize("start", ["cold", "fork", "pool"])
async def test_a_small_output_cap_does_not_cut_the_skills_report(
    model, rlm_env, skill_site, monkeypatch, start
):
    """The report of which skills loaded travels beside the bootstrap cell's output, not in
    it: ``RLM_MAX_OUTPUT`` cuts what a cell prints, and a cut report crashed every agent.
    Covers the three ways a kernel starts (the child's kernel is forked or pooled)."""
    if start != "cold" and not fork_supported():
        pytest.skip("fork start needs Linux")
    monkeypatch.setenv("RLM_MAX_OUTPUT", "60")
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_KERNEL_START", "cold" if start == "cold" else "fork")
    monkeypatch.setenv("RLM_KERNEL_POOL", "1" if start == "pool" else "0")
    model.script(
        reply(None, ipython("print(await rlm.run('child: shout hi'))")),
        reply("root done"),
        match="root",
    )
    model.script(reply(None, ipython("print(await shout(text='hi'))")), reply("HI"), match="child:")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "root done"
        launcher = orchestrator.launcher
        if start == "pool":
            assert launcher.pool is not None and launcher.pool.handed_out == 1
        else:
            assert launcher.pool is None and launcher.forking == (start == "fork")
    for match in ("root", "child:"):
        system = model.requests_for(match)[0]["messages"][0]["content"]
        assert "`await shout(text: str, times: int = 1) -> str`: shout for tests" in system
        assert "fragile" not in system
    (child_tool,) = [
        m["content"] for m in model.requests_for("child:")[-1]["messages"] if m["role"] == "tool"
    ]
    assert child_tool == "HI"
    (root,) = sessions(rlm_env)
    failures = [e["name"] for e in read_log(root) if e.get("event") == "skill_failed"]
    assert failures == ["fragile"]
