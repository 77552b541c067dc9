"""install.sh into a private uv tool dir: rlm and skill CLIs land in the bin dir, reruns work.

``UV_TOOL_DIR`` / ``UV_TOOL_BIN_DIR`` point into tmp_path, so nothing touches the real
``~/.local``; uv's cache keeps each install at a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scripted_model import ScriptedModel, ipython, reply

# The module fixture runs install.sh (uv installs, up to 300 s) inside the first test's time.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install.sh"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "skills"


class Install:
    """One private install target: tool dir, bin dir and skills folder."""

    def __init__(self, root: Path) -> None:
        self.tools = root / "tools"
        self.bin = root / "bin"
        self.skills = root / "skills"
        self.skills.mkdir(parents=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env |= {
            "UV_TOOL_DIR": str(self.tools),
            "UV_TOOL_BIN_DIR": str(self.bin),
            "RLM_SKILLS_DIR": str(self.skills),
            "COLUMNS": "200",
        }
        return env

    def add(self, fixture: str, as_name: str | None = None) -> Path:
        target = self.skills / (as_name or fixture)
        shutil.copytree(FIXTURES / fixture, target)
        return target

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(INSTALL)], capture_output=True, text=True, env=self.env(), timeout=300
        )

    def tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / name), *args], capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """rlm + greet + wordcount installed once; tests below may re-run and change it."""
    target = Install(tmp_path_factory.mktemp("install"))
    target.add("greet")
    target.add("wordcount")
    # A stale executable uv does not own (say, from an old pip install) must be replaced.
    target.bin.mkdir()
    (target.bin / "greet").write_text("#!/bin/sh\necho stale\n")
    (target.bin / "greet").chmod(0o755)
    result = target.run()
    assert result.returncode == 0, result.stdout + result.stderr
    target.first_output = result.stdout  # type: ignore[attr-defined]
    return target


def test_install_is_executable() -> None:
    assert os.access(INSTALL, os.X_OK)
    assert INSTALL.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in INSTALL.read_text()


def test_install_exposes_rlm_and_skill_clis(installed: Install) -> None:
    rlm = installed.bin / "rlm"
    assert rlm.is_file() and os.access(rlm, os.X_OK)
    output = installed.first_output  # type: ignore[attr-defined]
    assert f"rlm -> {rlm}" in output
    assert f"greet -> {installed.bin / 'greet'}" in output
    assert f"wordcount -> {installed.bin / 'wordcount'}" in output
    result = installed.tool("rlm", "--help")
    assert result.returncode == 0, result.stderr
    assert "RLM_MAX_DEPTH" in result.stdout
    greet = installed.tool("greet", "--names", "Ada", "--shout")
    assert greet.returncode == 0, greet.stderr
    assert greet.stdout == "HELLO, ADA!\n"
    assert json.loads(installed.tool("wordcount", "--text", "a b a").stdout) == {"a": 2, "b": 1}


def test_skills_share_rlm_environment(installed: Install) -> None:
    """The kernel runs in rlm's Python, so the skills must import there."""
    python = installed.tools / "rlm" / "bin" / "python"
    code = "import greet, wordcount, rlm.skills.discovery; print(sorted(s.name for s in rlm.skills.discovery.discover()))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['greet', 'wordcount']"


def test_installed_rlm_answers_and_calls_a_skill_from_the_kernel(
    installed: Install, model: ScriptedModel, rlm_env: Path
) -> None:
    """The issue's "done when": ./install.sh, then `rlm "<task>"` against a model prints the
    answer; the kernel (in the tool environment) has the skill pre-imported and the prompt
    lists it."""
    code = "print(await greet(names=['Ada'], shout=True))\nprint(greet.run.__name__)"
    model.script(reply(None, ipython(code)), reply("greeted Ada"))
    result = installed.tool("rlm", "greet Ada loudly")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "greeted Ada\n"
    system = model.requests[0]["messages"][0]["content"]
    assert "`await greet(names: list[str]" in system and "SKILL.md" in system
    assert "wordcount" in system
    tool = [m for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool[0]["content"] == "HELLO, ADA!\nrun"


def test_rerun_picks_up_new_and_changed_skills_then_drops_removed(installed: Install) -> None:
    # Re-run over the existing install with one skill added and one skill's code changed.
    installed.add("explode")
    source = installed.skills / "greet" / "src" / "greet" / "greet.py"
    source.write_text(source.read_text().replace('"Hello"', '"Howdy"'))
    again = installed.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"explode -> {installed.bin / 'explode'}" in again.stdout
    assert installed.tool("explode", "--no-fail").returncode == 0
    assert installed.tool("greet", "--names", "Ada").stdout == "Howdy, Ada!\n"
    assert installed.tool("wordcount", "--text", "x").returncode == 0  # untouched skill kept

    # A removed skill folder disappears from the environment and the bin dir.
    shutil.rmtree(installed.skills / "explode")
    dropped = installed.run()
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert sorted(p.name for p in installed.bin.iterdir()) == ["greet", "rlm", "wordcount"]


def _rename_dist(folder: Path) -> None:
    pyproject = folder / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("rlm-skill-greet", "greet-tool"))


def _rename_script(folder: Path) -> None:
    pyproject = folder / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('greet = "rlm.skill:cli"', 'hi = "x:y"'))


def _drop_package(folder: Path) -> None:
    shutil.rmtree(folder / "src" / "greet")


@pytest.mark.parametrize(
    ("folder_name", "breakage", "rule"),
    [
        ("greeter", None, "distribution name in pyproject.toml is rlm-skill-greeter"),
        ("Greet", None, "folder name <name> is a lowercase Python identifier"),
        ("greet", _rename_dist, "distribution name in pyproject.toml is rlm-skill-greet"),
        ("greet", _drop_package, "import package is src/greet/"),
        ("greet", _rename_script, 'console script greet = "rlm.skill:cli"'),
    ],
    ids=["folder-vs-dist", "folder-case", "dist-name", "package", "script"],
)
def test_misnamed_skill_fails_naming_the_rule(
    tmp_path: Path, folder_name: str, breakage: object, rule: str
) -> None:
    target = Install(tmp_path)
    folder = target.add("greet", as_name=folder_name)
    if callable(breakage):
        breakage(folder)
    result = target.run()
    assert result.returncode != 0
    assert rule in result.stderr
    assert str(folder) in result.stderr
    assert not target.tools.exists()  # validation happens before anything is installed


def test_folders_without_pyproject_are_skipped(tmp_path: Path) -> None:
    target = Install(tmp_path)
    (target.skills / "notes").mkdir()
    bad = target.add("greet", as_name="Bad-Name")
    (bad / "pyproject.toml").unlink()  # not a skill: ignored even though misnamed
    # Stop before the (slow) install: an invalid UV_TOOL_DIR makes uv fail right away.
    env = target.env() | {"UV_TOOL_DIR": "/dev/null/tools"}
    result = subprocess.run([str(INSTALL)], capture_output=True, text=True, env=env, timeout=120)
    assert f"skipping {target.skills / 'notes'} (no pyproject.toml)" in result.stdout
    assert "installing rlm from" in result.stdout
    assert "Bad-Name" not in result.stderr


# -- a fresh shell: HOME without ~/.local/bin on PATH ---------------------------------------------


def _fresh_machine(tmp_path: Path, home_bin_on_path: bool) -> dict[str, str]:
    """The environment of a new user's shell: a fresh HOME, a PATH of system directories (and
    ``~/bin`` if asked), no ``~/.local/bin``, no ``/usr/local/bin`` (never touch the real one)
    and uv only through a private directory; uv's cache and Python are the test machine's so
    nothing is downloaded."""
    home = tmp_path / "home"
    home.mkdir()
    uv_dir = tmp_path / "uvbin"
    uv_dir.mkdir()
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to run the install tests"
    (uv_dir / "uv").symlink_to(Path(uv).resolve())
    path = [str(uv_dir), "/usr/bin", "/bin"]
    if home_bin_on_path:
        (home / "bin").mkdir()
        path.insert(0, str(home / "bin"))
    cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True)
    python = subprocess.run(
        [uv, "python", "find", ">=3.11"], capture_output=True, text=True, check=True
    )
    # the machine's network settings (proxy, certificates, index) stay; what locates a user's
    # files and tools does not
    dropped = ("VIRTUAL_ENV", "XDG_", "UV_TOOL_", "PYENV", "CONDA", "PIP_USER")
    kept = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return kept | {
        "HOME": str(home),
        "PATH": ":".join(path),
        "UV_CACHE_DIR": cache.stdout.strip(),
        "UV_PYTHON": python.stdout.strip(),
        "RLM_SKILLS_DIR": str(tmp_path / "no-skills"),
        "LANG": "C.UTF-8",
    }


def test_rlm_works_in_the_same_shell_after_install(tmp_path: Path) -> None:
    """~/bin is on PATH and writable: install.sh links rlm there, so the very next command of
    the same shell finds it (a script cannot change its caller's PATH)."""
    env = _fresh_machine(tmp_path, home_bin_on_path=True)
    script = f'"{INSTALL}" && rlm --version'
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("rlm ")
    home = Path(env["HOME"])
    assert (home / "bin" / "rlm").resolve() == (home / ".local" / "bin" / "rlm").resolve()
    assert "not on your PATH" not in result.stdout


def test_install_says_the_exact_export_line_when_it_cannot_link(tmp_path: Path) -> None:
    """No writable directory on PATH: rlm is not found, and the export line printed is the
    exact command that makes it work."""
    env = _fresh_machine(tmp_path, home_bin_on_path=False)
    script = (
        f'out="$("{INSTALL}")" || exit 9; printf "%s\\n" "$out"; '
        "command -v rlm && exit 8; "
        'eval "$(grep "^    export PATH=" <<<"$out")"; rlm --version'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    home = env["HOME"]
    assert f'    export PATH="{home}/.local/bin:$PATH"' in result.stdout
    assert "is not on your PATH" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("rlm ")
