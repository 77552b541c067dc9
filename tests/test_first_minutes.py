"""Issue 19, the small traps a new user hits in the first ten minutes: each test drives the
``rlm`` command (a subprocess, real HTTP to the scripted model, real kernels) the way the
user did and checks what they see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import rlm
from conftest import sessions
from helpers import run_cli
from scripted_model import ScriptedModel, ipython, reply


def system_message(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """Exit ``code``, nothing on stdout, exactly one line on stderr and no traceback."""
    assert result.returncode == code, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- --version, empty prompts, empty model -----------------------------------------------------


def test_version_prints_name_and_version(model: ScriptedModel, rlm_env: Path):
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"rlm {rlm.__version__}\n"
    assert model.requests == []


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n"])
def test_blank_prompt_is_refused(model, rlm_env, prompt):
    line = one_line_error(run_cli(prompt))
    assert "prompt is empty" in line
    assert model.requests == []


def test_blank_prompt_with_json_is_one_object(model, rlm_env):
    result = run_cli("--json", "  ")
    assert result.returncode == 2
    record = json.loads(result.stdout)
    assert record["reason"] == "config" and "prompt is empty" in record["error"]


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        (["hi"], {"RLM_MODEL": ""}, "RLM_MODEL"),
        (["hi"], {"RLM_MODEL": "  "}, "RLM_MODEL"),
        (["hi", "--model", " "], {}, "--model"),
    ],
)
def test_blank_model_is_refused(model, rlm_env, args, env, name):
    line = one_line_error(run_cli(*args, env=env))
    assert name in line and "blank" in line
    assert model.requests == []


# -- no API key ----------------------------------------------------------------------------------

NO_KEY = "no API key set"


def test_no_api_key_is_said_once_for_a_remote_endpoint(model, rlm_env, monkeypatch):
    monkeypatch.delenv("RLM_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # a documentation address (TEST-NET-1): not local; one short attempt, then the run fails
    env = {
        "RLM_BASE_URL": "http://192.0.2.1:9/v1",
        "RLM_TOOLS": "",
        "RLM_RETRY_ATTEMPTS": "1",
        "RLM_MODEL_TIMEOUT": "1",
    }
    result = run_cli("hello", "-q", env=env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("rlm: " + NO_KEY) and "192.0.2.1" in lines[0], result.stderr
    assert result.stderr.count(NO_KEY) == 1


def test_no_api_key_is_fine_for_a_local_endpoint(model, rlm_env, monkeypatch):
    monkeypatch.delenv("RLM_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(reply("local answer"))
    result = run_cli("hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "local answer\n"
    assert NO_KEY not in result.stderr


def test_a_key_silences_the_warning(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_TOOLS", "")
    env = {"RLM_BASE_URL": "http://192.0.2.1:9/v1", "RLM_RETRY_ATTEMPTS": "1"}
    env["RLM_MODEL_TIMEOUT"] = "1"
    result = run_cli("hello", "-q", env=env)
    assert result.returncode == 1 and NO_KEY not in result.stderr


# -- .rlm/ stays out of git ----------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_default_home_does_not_show_up_in_git_status(model, rlm_env, monkeypatch):
    monkeypatch.delenv("RLM_HOME")  # the default: .rlm in the working directory
    monkeypatch.setenv("RLM_TOOLS", "")
    work = Path.cwd()
    git("init", "-q", cwd=work)
    model.script(reply("ok"))
    result = run_cli("hello", "-q")
    assert result.returncode == 0, result.stderr
    assert sessions(work / ".rlm")  # the session was written there
    assert (work / ".rlm" / ".gitignore").read_text() == "*\n"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=work) == ""


def test_an_existing_home_is_left_as_it_is(model, rlm_env, monkeypatch):
    rlm_env.mkdir()
    monkeypatch.setenv("RLM_TOOLS", "")
    model.script(reply("ok"))
    assert run_cli("hello", "-q").returncode == 0
    assert sessions(rlm_env) and not (rlm_env / ".gitignore").exists()


# -- help texts and plurals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["--help"], ["skill", "--help"], ["skill", "new", "--help"], ["sessions", "--help"]]
)
def test_help_has_no_restructuredtext_markup(model, rlm_env, args):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "``" not in result.stdout
    assert ":class:" not in result.stdout and ":func:" not in result.stdout


def test_one_turn_is_singular(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_TURNS", "1")
    prompt = run_cli("--print-system-prompt").stdout
    assert "at most 1 turn." in prompt
    model.script(reply(None, ipython("1 + 1")))
    result = run_cli("loop")  # not a terminal: the line progress
    assert result.returncode == 1
    assert "1 turns" not in result.stderr
    assert "stopped after 1 turn without a final answer" in result.stderr
    assert "after 1 turn," in result.stderr  # the progress line of the finished agent


# -- rlm skill new ------------------------------------------------------------------------------


def test_skill_new_writes_into_the_current_directory_as_documented(model, rlm_env):
    result = run_cli("skill", "new", "trapskill")
    assert result.returncode == 0, result.stderr
    work = Path.cwd()
    assert Path(result.stdout.strip()) == Path("trapskill")
    assert (work / "trapskill" / "pyproject.toml").is_file()
    assert not (work / "skills").exists()
    # the next step names the folder absolutely: install.sh is in the rlm checkout, not here
    assert f"RLM_SKILLS_DIR={work.resolve()} ./install.sh" in result.stderr
    assert "rlm checkout" in result.stderr
    docs = (Path(__file__).parents[1] / "docs" / "skills.md").read_text()
    assert "rlm skill new websearch" in docs and "This creates `./websearch/`" in docs


# -- --print-system-prompt is what a run sends ---------------------------------------------------

FUNCTIONS = '''
def add(a: int, b: int) -> int:
    """Add two numbers on the host."""
    return a + b

__all__ = ["add"]
'''


def test_print_system_prompt_equals_the_prompt_a_run_sends(model, rlm_env, tmp_path):
    functions = tmp_path / "host_fns.py"
    functions.write_text(FUNCTIONS)
    printed = run_cli("--print-system-prompt", "--functions", str(functions))
    assert printed.returncode == 0, printed.stderr
    assert "add(a: int, b: int)" in printed.stdout  # the skills/functions section is there
    model.script(reply("done"))
    result = run_cli("do it", "-q", "--functions", str(functions))
    assert result.returncode == 0, result.stderr
    assert system_message(model.requests[0]) == printed.stdout


def test_print_system_prompt_without_a_kernel_has_no_functions(model, rlm_env, tmp_path):
    functions = tmp_path / "host_fns.py"
    functions.write_text(FUNCTIONS)
    printed = run_cli("--print-system-prompt", "--functions", str(functions), "--tools", "bash")
    model.script(reply("done"))
    result = run_cli("do it", "-q", "--functions", str(functions), "--tools", "bash")
    assert result.returncode == 0, result.stderr
    assert system_message(model.requests[0]) == printed.stdout
    assert "add(a: int" not in printed.stdout


# -- exported notebooks re-run -------------------------------------------------------------------


def test_exported_notebook_with_a_sub_agent_cell_reruns(model, rlm_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    cell = "x = 6 * 7\nanswer = await rlm.run('greet')\nprint(x, answer)"
    model.script(reply(None, ipython(cell)), reply("hi from child"), reply("done"))
    result = run_cli("spawn one", "-q")
    assert result.returncode == 0, result.stderr
    (folder,) = sessions(rlm_env)
    out = tmp_path / "nb"
    export = run_cli("sessions", "export", folder.name, "--format", "ipynb", "-o", str(out))
    assert export.returncode == 0, export.stderr
    path = out / f"{folder.name}.ipynb"
    notebook = nbformat.read(str(path), as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code[0].metadata["rlm"] == {"kind": "setup"} and "import rlm" in code[0].source
    assert code[0].execution_count is None and code[1].execution_count == 1
    # re-run in a plain kernel: the sub-agent call starts a new agent (the scripted model
    # answers it), where without the setup cell it was a NameError
    model.script(reply("hi again"))
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for o in code[1].outputs)
    assert printed == "42 hi again\n"


# -- config files --------------------------------------------------------------------------------


@pytest.fixture
def config_home(rlm_env, tmp_path, monkeypatch) -> Path:
    """A private XDG_CONFIG_HOME; returns the user config file's path (not yet written)."""
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    (xdg / "rlm").mkdir(parents=True)
    return xdg / "rlm" / "config.toml"


def max_turns_in_prompt(*args: str, env: dict[str, str] | None = None) -> int:
    result = run_cli("--print-system-prompt", *args, env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("You have at most ")[1]
    return int(text.split()[0])


def test_config_precedence_flags_env_project_user_default(model, config_home):
    assert max_turns_in_prompt() == 30  # the default
    config_home.write_text("max_turns = 11\n")
    assert max_turns_in_prompt() == 11
    Path("rlm.toml").write_text("max_turns = 12\n")
    assert max_turns_in_prompt() == 12
    assert max_turns_in_prompt(env={"RLM_MAX_TURNS": "13"}) == 13
    assert max_turns_in_prompt("--max-turns", "14", env={"RLM_MAX_TURNS": "13"}) == 14


def test_user_config_without_xdg_is_under_home(model, rlm_env, tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    user = tmp_path / "userhome" / ".config" / "rlm" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("max_turns = 7\n")
    assert max_turns_in_prompt() == 7


def test_project_file_model_reaches_the_request(model, config_home, monkeypatch):
    monkeypatch.delenv("RLM_MODEL")
    monkeypatch.setenv("RLM_TOOLS", "")
    config_home.write_text('model = "from-user"\n')
    Path("rlm.toml").write_text('model = "from-project"\n')
    model.script(reply("ok"))
    result = run_cli("hi", "-q")
    assert result.returncode == 0, result.stderr
    assert model.requests[0]["model"] == "from-project"


def test_user_file_may_hold_the_api_key(model, config_home, monkeypatch):
    monkeypatch.delenv("RLM_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config_home.write_text('api_key = "sk-from-user-file"\n')
    result = run_cli("--print-system-prompt")
    assert result.returncode == 0, result.stderr
    from rlm.config import load_settings

    assert load_settings().key == "sk-from-user-file"


@pytest.mark.parametrize("key", ["api_key", "RLM_API_KEY", "OPENAI_API_KEY"])
def test_project_file_may_not_hold_the_api_key(model, config_home, key):
    Path("rlm.toml").write_text(f'{key} = "sk-committed-secret"\n')
    line = one_line_error(run_cli("hi"))
    assert "rlm.toml" in line and "API key" in line
    assert "sk-committed-secret" not in line
    assert model.requests == []


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("max_turns = \n", ["rlm.toml", "not valid TOML"]),
        ('max_turns = "many"\n', ["rlm.toml: max_turns", "'many'"]),
        ("no_such_setting = 1\n", ["rlm.toml: no_such_setting"]),
    ],
)
def test_bad_project_file_is_one_line(model, config_home, text, needles):
    Path("rlm.toml").write_text(text)
    line = one_line_error(run_cli("hi"))
    for needle in needles:
        assert needle in line, line


def test_bad_user_file_names_it(model, config_home):
    config_home.write_text("[[[\n")
    line = one_line_error(run_cli("hi"))
    assert str(config_home) in line and "not valid TOML" in line


def test_library_reads_the_config_files_too(model, config_home):
    Path("rlm.toml").write_text("max_depth = 2\n")
    code = "import rlm.config as c; print(c.load_settings().max_depth)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "2\n", result.stderr
