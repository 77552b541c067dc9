"""MCP servers as kernel functions: real servers from PyPI (mcp-server-time, mcp-server-git),
a server built on the ``mcp`` package for the failure cases (stdio and streamable HTTP),
real kernels and the scripted model. Each server runs in the orchestrator; its tools are
async methods of an object of every kernel of the tree."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rlm
from conftest import sessions
from helpers import run_cli
from scripted_model import ScriptedModel, ipython, reply

FAKE = str(Path(__file__).with_name("mcp_fake_server.py"))


def tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def write_config(path: Path, servers: dict) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "tracked.txt").write_text("one\n")
    subprocess.run([*git, "add", "tracked.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first commit"], check=True)
    (repo / "tracked.txt").write_text("two\n")
    (repo / "fresh_untracked.txt").write_text("new\n")
    return repo


CELL = """
import json, os
now = await clock.get_current_time(timezone="UTC")
status = await git.git_status(repo_path={repo!r})
log = await git.git_log(repo_path={repo!r}, max_count=1)
help(clock.get_current_time)
print("RESULT", json.dumps({{"now": now, "status": status, "log": log,
                  "secret": os.environ.get("MCP_SECRET", "absent")}}))
"""


async def test_pypi_time_and_git_servers_are_kernel_functions_in_every_kernel(
    model: ScriptedModel,
    rlm_env: Path,
    tmp_path: Path,
    git_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    config = write_config(
        tmp_path / "mcp.json",
        {
            "clock": {
                "command": sys.executable,
                "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
                "env": {"MCP_SECRET": "s3cret-token"},
            },
            "git": {"command": sys.executable, "args": ["-m", "mcp_server_git"]},
        },
    )
    model.script(
        reply(None, ipython("print(await rlm.run('child: check the repo'))")),
        reply("root done"),
        match="root",
    )
    model.script(
        reply(None, ipython(CELL.format(repo=str(git_repo)))), reply("child done"), match="child:"
    )
    assert await rlm.run("root task", mcp_config=config) == "root done"
    (result,) = tool_results(model.requests_for("child:"))
    (line,) = [line for line in result.splitlines() if line.startswith("RESULT ")]
    shown = json.loads(line.removeprefix("RESULT "))
    assert shown["now"]["timezone"] == "UTC" and shown["now"]["datetime"][:2] == "20"
    assert "fresh_untracked.txt" in str(shown["status"]) and "tracked.txt" in str(shown["status"])
    assert "first commit" in str(shown["log"])
    assert shown["secret"] == "absent"  # the server's env stays in the orchestrator
    assert "get_current_time(*, timezone: 'str')" in result and "Input schema (JSON)" in result
    prompt = model.requests_for("child:")[0]["messages"][0]["content"]
    assert "## MCP servers" in prompt
    assert "`await clock.get_current_time(*, timezone: str)`" in prompt
    assert "`await git.git_status(*, repo_path: str)`" in prompt
    (root,) = sessions(rlm_env)
    (child,) = root.glob("sub-*")
    calls = [json.loads(line) for line in (child / "function_calls.jsonl").read_text().splitlines()]
    assert [c["name"] for c in calls] == ["clock.get_current_time", "git.git_status", "git.git_log"]
    assert all("error" not in c for c in calls)


FAILURES = """
import json
out = {}
async def attempt(name, make):
    try:
        out[name] = await make()
    except rlm.FunctionError as exc:
        out[name] = "FunctionError: " + exc.message
    except AttributeError as exc:
        out[name] = "AttributeError: " + str(exc)
await attempt("http echo", lambda: web.echo(text="ab", times=3))
await attempt("server env", lambda: fake.env(name="FAKE_TOKEN"))
await attempt("http header", lambda: web.header(name="x-api-key"))
await attempt("never started", lambda: missing.anything())
await attempt("exited", lambda: exits.anything())
await attempt("positional", lambda: fake.echo("x"))
await attempt("no such tool", lambda: fake.nope())
await attempt("hang", lambda: fake.hang(seconds=30))
await attempt("crash", lambda: fake.crash())
await attempt("after crash", lambda: fake.echo(text="x"))
await attempt("http still up", lambda: web.echo(text="z", times=1))
print(json.dumps(out))
"""


@pytest.fixture
def http_server() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, FAKE, "--http"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{line.split()[1]}/mcp"
    finally:
        proc.kill()
        proc.wait()


async def test_a_server_that_fails_to_start_crashes_or_hangs_gives_the_cell_an_error(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, http_server: str
) -> None:
    config = {
        "mcpServers": {
            "fake": {"command": sys.executable, "args": [FAKE], "env": {"FAKE_TOKEN": "tok"}},
            "missing": {"command": str(tmp_path / "no-such-server")},
            "exits": {
                "command": sys.executable,
                "args": ["-c", "import sys; sys.stderr.write('bad credentials\\n'); sys.exit(1)"],
            },
            "web": {"url": http_server, "headers": {"X-Api-Key": "k-123"}},
        }
    }
    model.script(reply(None, ipython(FAILURES)), reply("still going"))
    async with rlm.Session(mcp_config=config, mcp_timeout=3) as session:
        assert await session.send("use the servers") == "still going"
    (result,) = tool_results(model.requests)
    out = json.loads(result.splitlines()[0])
    assert out["http echo"] == {"result": "ababab"}
    assert out["server env"] == {"result": "tok"}
    assert out["http header"] == {"result": "k-123"}
    assert out["never started"].startswith(
        "FunctionError: MCP server 'missing' is unavailable: failed to start: FileNotFoundError"
    )
    log = rlm_env / "mcp" / "exits.log"  # the server's stderr, not rlm's
    assert out["exited"].startswith("FunctionError: MCP server 'exits' is unavailable: failed")
    assert out["exited"].endswith(f"(its log {log} ends: bad credentials)")
    assert "too many positional arguments" in out["positional"]
    assert out["no such tool"].startswith("AttributeError: MCP server 'fake' has no tool 'nope'")
    assert "did not answer within 3s (RLM_MCP_TIMEOUT)" in out["hang"]
    assert out["crash"].startswith(
        "FunctionError: fake.crash raised MCPServerError: MCP server 'fake' stopped"
    )
    assert "MCP server 'fake' is unavailable: stopped" in out["after crash"]
    assert out["http still up"] == {"result": "z"}
    prompt = model.requests[0]["messages"][0]["content"]
    assert "- `missing`: unavailable (failed to start: FileNotFoundError" in prompt


def test_print_system_prompt_lists_the_mcp_tools(rlm_env: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "mcp.json",
        {"fake-server": {"command": sys.executable, "args": [FAKE]}},
    )
    done = run_cli("--print-system-prompt", "--mcp-config", str(config))
    assert done.returncode == 0, done.stderr
    assert "- `fake_server`: A fake server for tests." in done.stdout
    assert "  - `await fake_server.echo(*, text: str, times: int = 2)`: Repeat" in done.stdout


def test_a_bad_mcp_config_is_one_line_and_exit_2(rlm_env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {"x": {"args": []}}}')
    done = run_cli("--mcp-config", str(bad), "task")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"rlm: RLM_MCP_CONFIG: {str(bad)!r}: mcpServers.x: each server needs a command (stdio) "
        "or an http(s) url"
    ]
    bad.write_text('{"mcpServers": {"my server": {"command": "x"}}}')
    done = run_cli("task", env={"RLM_MCP_CONFIG": str(bad)})
    assert done.returncode == 2 and "server name 'my server' cannot be a kernel name" in done.stderr
