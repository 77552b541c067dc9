"""Skills end to end: fixture skills installed into a real venv, driven as CLIs and in Python.

The fixture skills under ``tests/fixtures/skills`` follow the template: ``greet`` (async, str /
int / bool / list[str] parameters), ``wordcount`` (sync ``run`` returning a dict), ``explode``
(``run`` raises) and ``broken`` (installs fine, fails at import). They are installed once per
module, next to an editable rlm, into a throwaway venv; uv's cache makes that take seconds.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rlm.errors import ConfigError, KernelError
from rlm.skills.discovery import (
    REPORT_EXPRESSIONS,
    REPORT_VARIABLE,
    SkillInfo,
    discover,
    kernel_bootstrap_source,
    new_skill,
    parse_bootstrap_report,
    prompt_section,
    validate_skill_name,
)
from rlm.skills.entry import cli, describe_run, make_callable, render_result

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "skills"
SKILLS = ["broken", "explode", "greet", "wordcount"]
UV = shutil.which("uv")

needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed")
# The module fixture builds a venv with uv (up to 300 s) inside the first test's time.
pytestmark = pytest.mark.timeout(600)


class Env:
    """A venv holding rlm (editable) and the fixture skills."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.python = self.bin / "python"

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["COLUMNS"] = "200"  # tyro wraps help text to the terminal width
        return env

    def run(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command from the venv's bin (a skill CLI or python)."""
        exe = str(self.bin / argv[0])
        return subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            env=self.environ(),
            timeout=120,
            check=check,
        )

    def python_code(self, code: str) -> subprocess.CompletedProcess[str]:
        return self.run("python", "-c", code)

    def install(self, *paths: Path, names: list[str], extra: Sequence[str] = ()) -> None:
        """Install skill folders; --reinstall-package so edited sources are rebuilt."""
        reinstall = [arg for name in names for arg in ("--reinstall-package", f"rlm-skill-{name}")]
        subprocess.run(
            [UV, "pip", "install", "--quiet", "--python", str(self.python), *reinstall, *extra]
            + [str(path) for path in paths],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if UV is None:
        pytest.skip("uv is not installed")
    root = tmp_path_factory.mktemp("skill-venv") / "venv"
    subprocess.run(
        [UV, "venv", "--quiet", "--python", sys.executable, str(root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    venv = Env(root)
    # rlm editable, so the tests exercise the working tree's rlm.skills.entry / rlm.skills.discovery.
    venv.install(*(FIXTURES / name for name in SKILLS), names=SKILLS, extra=["-e", str(ROOT)])
    yield venv


# --- the console script --------------------------------------------------------------------------


def test_cli_help_shows_flags_and_docstring_help(env: Env) -> None:
    result = env.run("greet", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "usage: greet" in out
    for flag in ("--names", "--greeting", "--times", "--shout", "--no-shout"):
        assert flag in out
    assert "Greet everyone in names." in out  # description from the docstring
    assert out.count("People to greet.") == 1  # the Args: entry became flag help, only
    assert "Args:" not in out and "Returns:" not in out  # tyro leaves docstring sections out
    assert "How many times to repeat the greeting." in out
    assert "(default: Hello)" in out


def test_cli_call_prints_result_with_list_int_and_bool_flags(env: Env) -> None:
    result = env.run(
        "greet", "--names", "Ada", "Bob", "--times", "2", "--shout", "--greeting", "Hi"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HI, ADA AND BOB!\nHI, ADA AND BOB!\n"
    plain = env.run("greet", "--names", "Ada", "--no-shout")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "Hello, Ada!\n"  # defaults apply, str printed as is


def test_cli_missing_required_flag_is_a_usage_error(env: Env) -> None:
    result = env.run("greet")
    assert result.returncode == 2
    assert "--names" in result.stderr


def test_cli_sync_run_prints_json(env: Env) -> None:
    result = env.run("wordcount", "--text", "b a b c b a", "--top", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"b": 3, "a": 2}


def test_cli_exception_is_a_traceback_and_nonzero_exit(env: Env) -> None:
    result = env.run("explode", "--message", "kaput")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: kaput" in result.stderr
    assert result.stdout == ""


def test_cli_none_result_prints_nothing(env: Env) -> None:
    result = env.run("explode", "--no-fail")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_cli_broken_import_is_a_traceback(env: Env) -> None:
    result = env.run("broken")
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr


# --- discovery and the kernel bootstrap -------------------------------------------------------


def test_discover_finds_installed_skills_with_skill_md(env: Env) -> None:
    code = (
        "import json; from rlm.skills.discovery import discover; "
        "print(json.dumps([s.model_dump(mode='json') for s in discover()]))"
    )
    result = env.python_code(code)
    assert result.returncode == 0, result.stderr
    found = {info["name"]: info for info in json.loads(result.stdout)}
    assert set(SKILLS) <= set(found)
    greet = found["greet"]
    assert greet["distribution"] == "rlm-skill-greet"
    assert greet["version"] == "0.1.0"
    assert greet["description"] == "Greets people by name, optionally shouting."
    assert greet["signature"] is None  # discover never imports a skill
    skill_md = Path(greet["skill_md"])
    assert skill_md.name == "SKILL.md" and skill_md.parent.name == "greet"
    assert "site-packages" in skill_md.parts  # shipped inside the installed package
    assert found["broken"]["description"].startswith("Fails at import time")


def test_discover_does_not_import_skills(env: Env) -> None:
    code = (
        "import sys; from rlm.skills.discovery import discover; names = [s.name for s in discover()]; "
        "print(sorted(n for n in names if n in sys.modules))"
    )
    result = env.python_code(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_discover_with_path_reads_another_environment(env: Env) -> None:
    site = next(env.root.glob("lib/python*/site-packages"))
    infos = {info.name: info for info in discover(path=[str(site)])}
    assert set(SKILLS) <= set(infos)
    assert infos["wordcount"].skill_md == (site / "wordcount" / "SKILL.md").resolve()
    assert "greet" not in {info.name for info in discover()}  # not in the test's own env


def _bootstrap_in_ipython(names: list[str], then: str = "") -> str:
    """Python code that runs the bootstrap as a kernel does (a cell, then the reply's
    ``user_expressions``) and prints ``REPORT <json>`` and ``CHECKS <json>`` lines."""
    return f"""
import asyncio, inspect, json
from IPython.core.interactiveshell import InteractiveShell
from rlm.skills.discovery import REPORT_EXPRESSIONS, kernel_bootstrap_source
shell = InteractiveShell.instance()
shell.run_cell(kernel_bootstrap_source({names!r}))
print("REPORT", json.dumps(shell.user_expressions(REPORT_EXPRESSIONS)))
ns = shell.user_ns
checks = {{}}
{then}
print("CHECKS", json.dumps(checks))
"""


def _lines(stdout: str) -> dict[str, object]:
    """The ``REPORT`` and ``CHECKS`` lines printed by :func:`_bootstrap_in_ipython`."""
    found = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("REPORT", "CHECKS"):
            found[key] = json.loads(value)
    return found


def test_bootstrap_loads_good_skills_and_reports_broken(env: Env) -> None:
    checks = f"""
checks = {{
    "call": asyncio.run(ns["greet"](names=["Ada"], times=2)),
    "run": asyncio.run(ns["greet"].run(names=["Ada"], shout=True)),
    "sync": ns["wordcount"](text="x y x"),
    "signature": str(inspect.signature(ns["greet"])),
    "broken_bound": "broken" in ns,
    "helper_left": "__rlm_load_skills" in ns,
    "report_left": {REPORT_VARIABLE!r} in ns,
}}
"""
    result = env.python_code(_bootstrap_in_ipython(SKILLS, checks))
    assert result.returncode == 0, result.stderr
    printed = _lines(result.stdout)
    report = parse_bootstrap_report(printed["REPORT"])
    assert report.loaded == {
        "explode": "async run(message: str = 'boom', fail: bool = True) -> None",
        "greet": "async run(names: list[str], greeting: str = 'Hello', times: int = 1, "
        "shout: bool = False) -> str",
        "wordcount": "run(text: str, top: int = 3) -> dict[str, int]",
    }
    assert list(report.failed) == ["broken"]
    assert report.failed["broken"].startswith("ModuleNotFoundError: No module named")
    checks = printed["CHECKS"]
    assert checks["call"] == "Hello, Ada!\nHello, Ada!"
    assert checks["run"] == "HELLO, ADA!"
    assert checks["sync"] == {"x": 2, "y": 1}
    assert checks["signature"].startswith("(names: list[str], greeting: str = 'Hello'")
    assert checks["broken_bound"] is False
    assert checks["helper_left"] is False
    assert checks["report_left"] is False  # the expression took it out of the namespace


def test_bootstrap_in_ipython_supports_top_level_await_and_help(env: Env) -> None:
    """What the model does in a kernel cell: ``await greet(...)`` and ``help(greet)``."""
    checks = """
shell.run_cell("result = await greet(names=['Ada'])", store_history=True)
shell.run_cell("import pydoc; doc = pydoc.render_doc(greet, renderer=pydoc.plaintext)")
checks = {"result": ns.get("result"), "help": ns.get("doc")}
"""
    result = env.python_code(_bootstrap_in_ipython(["greet", "broken"], checks))
    assert result.returncode == 0, result.stderr
    printed = _lines(result.stdout)
    report = parse_bootstrap_report(printed["REPORT"])
    assert set(report.loaded) == {"greet"} and set(report.failed) == {"broken"}
    checks = printed["CHECKS"]
    assert checks["result"] == "Hello, Ada!"
    text = checks["help"]
    first = "greet - greet(names: list[str], greeting: str = 'Hello', times: int = 1, "
    assert first in text  # NAME line: the signature
    assert "Call as `await greet(...)`, same as `await greet.run(...)`." in text
    assert "Greet everyone in names." in text
    assert "names: People to greet." in text
    assert "Returns:" in text
    assert "_rlm_" not in text  # bookkeeping stays out of help()


def test_bootstrap_source_rejects_non_identifiers() -> None:
    with pytest.raises(ValueError, match="not valid skill names"):
        kernel_bootstrap_source(["ok", "os; import evil"])


def test_bootstrap_reports_everything_failed_without_rlm() -> None:
    """In a Python without rlm every skill is reported failed and the cell still completes."""
    code = f"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
sys.modules["rlm"] = None  # makes `import rlm` fail
shell.run_cell({kernel_bootstrap_source(["greet"])!r})
print(json.dumps(shell.user_expressions({REPORT_EXPRESSIONS!r})))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = parse_bootstrap_report(json.loads(result.stdout))
    assert report.loaded == {}
    assert report.failed["greet"].startswith("ModuleNotFoundError")


@pytest.mark.parametrize(
    ("evaluated", "reason"),
    [
        ({}, "gave no report"),
        (
            {"rlm_skills": {"status": "error", "ename": "NameError", "evalue": "x"}},
            "could not be read: NameError: x",
        ),
        ({"rlm_skills": {"status": "ok", "data": {"text/plain": "None"}}}, "left no report"),
        ({"rlm_skills": {"status": "ok", "data": {"text/plain": "'{\"lo'"}}}, "malformed"),
        ({"rlm_skills": {"status": "ok", "data": {"text/plain": "{'loaded': {}}"}}}, "malformed"),
        (
            {"rlm_skills": {"status": "ok", "data": {"text/plain": repr('{"loaded": [1]}')}}},
            "malformed",
        ),
    ],
    ids=["missing", "error", "not-left", "cut", "not-text", "wrong-shape"],
)
def test_an_unreadable_bootstrap_report_is_a_kernel_error(
    evaluated: dict[str, object], reason: str
) -> None:
    with pytest.raises(KernelError, match=reason):
        parse_bootstrap_report(evaluated)


# --- prompt text ---------------------------------------------------------------------------------


def _infos(tmp_path: Path) -> list[SkillInfo]:
    return [
        SkillInfo(
            name="greet",
            distribution="rlm-skill-greet",
            description="Greets people.",
            skill_md=tmp_path / "greet" / "SKILL.md",
        ),
        SkillInfo(name="wordcount", distribution="rlm-skill-wordcount", description="Counts."),
        SkillInfo(name="broken", distribution="rlm-skill-broken", description="Never loads."),
    ]


def test_prompt_section_lists_loaded_skills(tmp_path: Path) -> None:
    signatures = {
        "greet": "async run(names: list[str], times: int = 1) -> str",
        "wordcount": "run(text: str) -> dict[str, int]",
    }
    text = prompt_section(_infos(tmp_path), signatures)
    assert text.startswith("## Skills\n")
    assert "`await greet(names: list[str], times: int = 1) -> str`: Greets people." in text
    assert f"(details: {tmp_path / 'greet' / 'SKILL.md'})" in text
    assert "`wordcount(text: str) -> dict[str, int]`: Counts." in text  # sync: no await
    assert "broken" not in text  # failed to load: not advertised
    assert text.endswith("\n")


def test_prompt_section_is_empty_without_loaded_skills(tmp_path: Path) -> None:
    assert prompt_section([], {}) == ""
    assert prompt_section(_infos(tmp_path), {}) == ""


# --- make_callable and cli in-process ----------------------------------------------------------


@pytest.fixture
def fake_skill() -> Iterator[types.ModuleType]:
    name = "rlm_test_fake_skill"
    module = types.ModuleType(name, "Package docstring.")

    def run(text: str, upper: bool = False) -> dict[str, str]:
        """Echo text.

        Args:
            text: What to echo.
            upper: Upper-case it.

        Returns:
            The echo.
        """
        return {"echo": text.upper() if upper else text}

    module.run = run  # type: ignore[attr-defined]
    sys.modules[name] = module
    yield module
    del sys.modules[name]


def test_make_callable_is_idempotent_and_keeps_run_docs(fake_skill: types.ModuleType) -> None:
    module = make_callable(fake_skill.__name__)
    assert module is fake_skill
    assert fake_skill(text="hi") == {"echo": "hi"}
    assert (
        str(inspect.signature(fake_skill)) == "(text: str, upper: bool = False) -> dict[str, str]"
    )
    first = fake_skill.__doc__
    make_callable(fake_skill.__name__)
    assert fake_skill.__doc__ == first
    assert first is not None
    assert first.startswith("rlm_test_fake_skill(text: str, upper: bool = False)")
    assert "Call as `rlm_test_fake_skill(...)`" in first  # sync run: no await
    assert first.count("Package docstring.") == 1 and "Args:" in first


def test_make_callable_requires_run() -> None:
    module = types.ModuleType("rlm_test_no_run")
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(AttributeError, match="no callable 'run'"):
            make_callable(module.__name__)
    finally:
        del sys.modules[module.__name__]


def test_cli_in_process(fake_skill: types.ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    cli(args=["--text", "hi", "--upper"], prog=fake_skill.__name__)
    assert json.loads(capsys.readouterr().out) == {"echo": "HI"}


def test_render_result_and_describe_run() -> None:
    assert render_result(None) is None
    assert render_result("text") == "text"
    assert json.loads(render_result({"p": Path("/x"), "s": {1}}) or "") == {"p": "/x", "s": [1]}

    async def run(queries: list[str], k: int = 5) -> str:
        return ""

    assert describe_run(run) == "async run(queries: list[str], k: int = 5) -> str"


# --- scaffolding ---------------------------------------------------------------------------------


def test_new_skill_scaffolds_installs_and_runs(env: Env, tmp_path: Path) -> None:
    target = new_skill("rlm_scaffold_probe", tmp_path)
    assert target == tmp_path / "rlm_scaffold_probe"
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == [
        "SKILL.md",
        "pyproject.toml",
        "src/rlm_scaffold_probe/__init__.py",
        "src/rlm_scaffold_probe/rlm_scaffold_probe.py",
    ]
    for path in target.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(), path
    assert 'name = "rlm-skill-rlm_scaffold_probe"' in (target / "pyproject.toml").read_text()

    env.install(target, names=["rlm_scaffold_probe"])
    result = env.run("rlm_scaffold_probe", "--text", "hi", "--repeat", "2", "--upper")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HI\nHI\n"
    help_text = env.run("rlm_scaffold_probe", "--help").stdout
    assert "The text to echo." in help_text
    site = next(env.root.glob("lib/python*/site-packages"))
    probe = next(info for info in discover(path=[str(site)]) if info.name == "rlm_scaffold_probe")
    assert probe.skill_md == (site / "rlm_scaffold_probe" / "SKILL.md").resolve()
    assert "rlm_scaffold_probe does" in probe.description  # the template's TODO line

    with pytest.raises(ConfigError, match="already exists"):
        new_skill("rlm_scaffold_probe", tmp_path)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("class", "keyword"),
        ("match", "keyword"),
        ("json", "standard-library"),
        ("asyncio", "standard-library"),
        ("print", "builtin"),
        ("Bad", "lowercase"),
        ("web-search", "lowercase"),
        ("1st", "lowercase"),
        ("", "lowercase"),
        ("pytest", "already importable"),
        ("rlm", "reserved"),
        ("get_ipython", "reserved"),
    ],
)
def test_skill_name_validation(name: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        new_skill(name, tmp_path)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing written for a refused name


def test_valid_skill_name_passes() -> None:
    validate_skill_name("rlm_some_new_skill2")
