"""A skill folder against the naming rules: ``rlm skill check DIR`` and
``python -m rlm.skills.check DIR`` (what install.sh runs before installing anything).

The slow end-to-end install.sh runs live in test_install.py; these are the rules themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rlm.cli.main import main as rlm_main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "skills"


def skill(tmp_path: Path, as_name: str = "greet") -> Path:
    """A copy of the fixture skill ``greet`` in a folder named ``as_name``."""
    target = tmp_path / as_name
    shutil.copytree(FIXTURES / "greet", target)
    return target


def edit(folder: Path, old: str, new: str) -> None:
    pyproject = folder / "pyproject.toml"
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new))


def check_stdlib_only(*folders: Path) -> subprocess.CompletedProcess[str]:
    """``python -m rlm.skills.check`` as install.sh runs it: rlm's source on PYTHONPATH and
    ``-S`` (no site-packages), so none of rlm's dependencies can be imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-S", "-m", "rlm.skills.check", *map(str, folders)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_template_shaped_skills_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = [FIXTURES / name for name in ("greet", "wordcount", "explode", "broken")]
    assert rlm_main(["skill", "check", *map(str, folders)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{folder}: ok" for folder in folders]
    result = check_stdlib_only(*folders)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _inline_scripts(folder: Path) -> None:
    """The same console script as an inline table inside [project]: equally valid TOML."""
    edit(folder, '[project.scripts]\ngreet = "rlm.skill:cli"\n', "")
    edit(
        folder,
        'name = "rlm-skill-greet"\n',
        'name = "rlm-skill-greet"\nscripts = {greet = "rlm.skill:cli"}\n',
    )


def _normalized_dist(folder: Path) -> None:
    edit(folder, 'name = "rlm-skill-greet"', 'name = "RLM_Skill.Greet"')


@pytest.mark.parametrize("change", [_inline_scripts, _normalized_dist], ids=["inline", "pep503"])
def test_any_toml_spelling_of_the_rules_passes(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    folder = skill(tmp_path)
    change(folder)
    assert check_stdlib_only(folder).returncode == 0


def _rename_dist(folder: Path) -> None:
    edit(folder, "rlm-skill-greet", "greet-tool")


def _drop_dist(folder: Path) -> None:
    edit(folder, 'name = "rlm-skill-greet"\n', "")


def _rename_script(folder: Path) -> None:
    edit(folder, 'greet = "rlm.skill:cli"', 'hi = "x:y"')


def _wrong_target(folder: Path) -> None:
    edit(folder, 'greet = "rlm.skill:cli"', 'greet = "greet:main"')


def _drop_package(folder: Path) -> None:
    shutil.rmtree(folder / "src" / "greet")


def _bad_toml(folder: Path) -> None:
    edit(folder, 'name = "rlm-skill-greet"', "name = rlm-skill-greet")


def _no_pyproject(folder: Path) -> None:
    (folder / "pyproject.toml").unlink()


@pytest.mark.parametrize(
    ("folder_name", "breakage", "message"),
    [
        (
            "greeter",
            None,
            "rule 'distribution name in pyproject.toml is rlm-skill-greeter' broken "
            "(got 'rlm-skill-greet')",
        ),
        (
            "Greet",
            None,
            "rule 'folder name <name> is a lowercase Python identifier' broken (got 'Greet')",
        ),
        (
            "greet",
            _rename_dist,
            "rule 'distribution name in pyproject.toml is rlm-skill-greet' broken "
            "(got 'greet-tool')",
        ),
        (
            "greet",
            _drop_dist,
            "rule 'distribution name in pyproject.toml is rlm-skill-greet' broken "
            "(got '<missing>')",
        ),
        ("greet", _drop_package, "rule 'import package is src/greet/ (with __init__.py)' broken"),
        (
            "greet",
            _rename_script,
            "rule 'console script greet = \"rlm.skill:cli\" in [project.scripts]' broken "
            "(got '<missing>')",
        ),
        (
            "greet",
            _wrong_target,
            "rule 'console script greet = \"rlm.skill:cli\" in [project.scripts]' broken "
            "(got 'greet:main')",
        ),
        ("greet", _bad_toml, "pyproject.toml is not valid TOML: "),
        ("greet", _no_pyproject, "no pyproject.toml"),
        ("json", None, "invalid skill name 'json': it shadows the standard-library module"),
        ("class", None, "invalid skill name 'class': it is a Python keyword"),
        ("display", None, "invalid skill name 'display': it is reserved in the kernel namespace"),
    ],
    ids=[
        "folder-vs-dist",
        "folder-case",
        "dist-name",
        "dist-missing",
        "package",
        "script-missing",
        "script-target",
        "bad-toml",
        "no-pyproject",
        "stdlib-name",
        "keyword-name",
        "reserved-name",
    ],
)
def test_a_broken_skill_names_its_rule_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    folder_name: str,
    breakage: Callable[[Path], None] | None,
    message: str,
) -> None:
    good = skill(tmp_path / "good")
    folder = skill(tmp_path, as_name=folder_name)
    if breakage is not None:
        breakage(folder)
    assert rlm_main(["skill", "check", str(good), str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"{good}: ok\n"
    assert captured.err.startswith(f"rlm skill: skill folder {folder}: {message}")
    assert captured.err.count("\n") == 1  # one line, no traceback

    result = check_stdlib_only(good, folder)
    assert result.returncode == 2
    assert result.stderr.startswith(f"skill folder {folder}: {message}")
    assert result.stderr.count("\n") == 1


def test_every_broken_folder_is_reported(tmp_path: Path) -> None:
    first = skill(tmp_path, as_name="greeter")
    second = skill(tmp_path, as_name="Greet")
    result = check_stdlib_only(first, second)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"skill folder {first}",
        f"skill folder {second}",
    ]


def test_check_without_folders_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rlm_main(["skill", "check"])
    assert exit_info.value.code == 2
    assert "DIR" in capsys.readouterr().err


def test_a_scaffolded_skill_passes(tmp_path: Path) -> None:
    from rlm.skills.discovery import new_skill

    folder = new_skill("rlm_scaffold_check", tmp_path)
    result = check_stdlib_only(folder)
    assert (result.returncode, result.stderr) == (0, "")
