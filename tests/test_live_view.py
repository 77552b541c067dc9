"""The live view as a person sees it: ``rlm`` on a pseudo-terminal against a slow model.

The terminal's output is read as it comes (escape sequences stripped) and waited on with a
deadline, never slept on: the streamed text must show before the reply ends, the clock must
move while nothing happens, rows are cut to the terminal's width, and interactive mode draws
every message with its own clock and summary line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import read_meta, sessions
from helpers import run_cli
from rlm.logs.procs import pid_alive
from scripted_model import delay, fault, ipython, reply

#: CSI and OSC sequences, charset selections, other two-byte escapes.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b."
)
_CLOCK = re.compile(r"● \S+ (\d+\.\d)s · turn (\d+) ·[^\n\r]*?· thinking")


class Terminal:
    """``rlm`` on a pseudo-terminal of ``cols`` columns; everything it wrote so far in
    :attr:`raw` (as sent) and :attr:`text` (escape sequences removed)."""

    def __init__(self, *args: str, cols: int = 100, env: dict[str, str] | None = None) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: size its terminal, then become rlm
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
            full = {**os.environ, "TERM": "xterm-256color", **(env or {})}
            full.pop("NO_COLOR", None)
            full.pop("COLUMNS", None)
            os.execvpe(sys.executable, [sys.executable, "-m", "rlm", *args], full)
        self.pid, self.fd, self.raw = pid, fd, ""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw)

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):
                self.raw += os.read(self.fd, 65536).decode(errors="replace")

    def wait_for(self, done: Callable[[str], object], what: str, timeout: float = 120) -> object:
        """Read until ``done(text)`` is truthy (returned), or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while not (found := done(self.text)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen; the screen ends {self.text[-1500:]!r}")
            self.read(min(0.2, max(deadline - time.monotonic(), 0.01)))
        return found

    def see(self, needle: str, timeout: float = 120) -> None:
        self.wait_for(lambda text: needle in text, repr(needle), timeout)

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def exit_code(self, timeout: float = 60) -> int:
        """Wait (reading, so rlm never blocks on a full terminal) for rlm's exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = status
                return os.waitstatus_to_exitcode(status)
            self.read(0.05)
        raise AssertionError(f"rlm did not exit within {timeout} s; {self.text[-800:]!r}")

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def open_(*args: str, **kwargs) -> Terminal:
        opened.append(Terminal(*args, **kwargs))
        return opened[-1]

    yield open_
    for term in opened:
        term.close()


def clocks(text: str) -> list[float]:
    return [float(m.group(1)) for m in _CLOCK.finditer(text)]


WORDS = "alpha beta gamma delta epsilon zeta eta theta"


def test_streamed_text_shows_before_the_reply_ends_and_the_clock_ticks(model, rlm_env, terminal):
    """Text shows as it streams, reasoning dimmed; the clock moves while nothing happens;
    rows are cut to the terminal's width; the run ends with the summary line."""
    prices = '{"scripted": {"prompt": 1000, "completion": 2000}}'
    model.script(
        delay(1.5, reply(WORDS, reasoning="pondering quietly", chunk_delay=0.35, usage=(10, 5)))
    )
    task = "a task for the slow model " + "word " * 30 + "ENDMARK"  # longer than a row
    term = terminal(task, cols=100, env={"RLM_TOOLS": "", "RLM_PRICES": prices})
    # nothing happens for 1.5 s: the clock must move anyway
    term.wait_for(lambda t: len(set(clocks(t))) >= 3, "a ticking clock while thinking")
    seen = clocks(term.text)
    assert seen == sorted(seen) and seen[-1] > seen[0]
    term.see("pondering quietly")  # reasoning, dimmed (SGR 2)
    assert re.search(r"\x1b\[[0-9;]*\b2\b[0-9;]*m[^\x1b]*pondering", term.raw)
    term.see("alpha beta gamma")
    assert "theta" not in term.text  # the reply is still being written
    # the root row shows its task, cut at the terminal's width (not wrapped onto a next line)
    rows = [line for line in re.split(r"[\r\n]", term.text) if "— a task for the slow" in line]
    assert rows and all(len(row) <= 100 and row.endswith("…") for row in rows)
    assert "ENDMARK" not in term.text
    assert term.exit_code() == 0
    text = term.text
    assert WORDS in text.split("alpha beta gamma", 1)[1]  # the answer, after the view
    (folder,) = sessions(rlm_env)
    summary = re.search(r"rlm: 1 turn · 15 tokens · \$0\.0200 · (\d+\.\d) s · session (\S+)", text)
    assert summary, text[-600:]
    assert float(summary.group(1)) >= 1.5 and summary.group(2) == str(folder)


def test_tool_calls_retries_and_sub_agents_show_in_the_tree(model, rlm_env, terminal):
    spawn = "r = await rlm.run('child: count slowly')\nprint(6 * 7, r)"
    model.script(
        reply(None, ipython(spawn)),
        delay(1.0, reply("root done")),
        match="root",
    )
    model.script(
        fault(503, headers={"Retry-After": "2"}),
        reply("child says " + WORDS, chunk_delay=0.3),
        match="child:",
    )
    term = terminal("--max-depth", "1", "root task", cols=120, env={"RLM_RETRY_MAX_WAIT": "3"})
    term.wait_for(lambda t: re.search(r"HTTP 503, retry in 2s \(2/\d\)", t), "a countdown")
    term.wait_for(lambda t: re.search(r"HTTP 503, retry in [01]s \(2/\d\)", t), "it counting")
    term.see("model endpoint: HTTP 503, retrying in 2 s (2/6)")  # once, above the tree
    # the child, nested under the root that runs the cell spawning it
    line = term.wait_for(
        lambda t: re.search(r"\n  ● sub-\w+ [^\n]*— child: count slowly", t), "the child's row"
    )
    assert line
    term.see("    │ child says alpha")  # its streamed text, under it
    term.see("ipython r = await rlm.run('child: count slowly')")  # the root's running call
    term.wait_for(lambda t: re.search(r"ipython r = await [^\n]* → 42 child says", t), "output")
    assert term.exit_code() == 0
    assert "root done" in term.text


def test_interactive_draws_every_message_with_its_own_clock(model, rlm_env, terminal):
    model.script(
        delay(0.5, reply("first answer")),
        delay(1.2, reply("second " + WORDS, chunk_delay=0.2)),
    )
    term = terminal(env={"RLM_TOOLS": ""})
    term.see("rlm> ")
    term.send("first question")
    term.see("first answer")
    term.see("rlm> ")
    before = len(term.text)
    term.send("second question")
    # the second message is drawn: its row, its task, a clock that starts again from zero
    term.wait_for(lambda t: "— second question" in t[before:], "the second message's row")
    term.wait_for(lambda t: len(set(clocks(t[before:]))) >= 2, "its clock")
    assert min(clocks(term.text[before:])) < 1.0
    term.see("second alpha beta")
    term.wait_for(
        lambda t: re.search(r"rlm: 1 turn · [\d,]+ tokens · \d+\.\d s", t[before:]), "2nd summary"
    )
    term.see("rlm> ")
    term.send("/exit")
    assert term.exit_code() == 0


def test_sigterm_at_the_prompt_ends_rlm(model, rlm_env, terminal):
    """After a turn, at the prompt, SIGTERM ends rlm with 143; the kernel goes, the log is
    closed."""
    work = Path.cwd()
    model.script(reply(None, ipython("import os; open('k.pid', 'w').write(str(os.getpid()))")))
    model.script(reply("ran it"))
    term = terminal("--quiet")
    term.see("rlm> ")
    term.send("run a cell")
    term.see("ran it")
    term.see("rlm> ")
    kernel = int((work / "k.pid").read_text())
    os.kill(term.pid, signal.SIGTERM)
    assert term.exit_code() == 143
    deadline = time.monotonic() + 10
    while pid_alive(kernel) and time.monotonic() < deadline:
        term.read(0.05)
    assert not pid_alive(kernel)
    meta = read_meta(sessions(rlm_env)[0])
    assert meta["status"] != "running"


def test_plain_progress_shows_tool_output_and_ends_with_the_summary(model, rlm_env):
    """Off a terminal: one line per step, a tool's output preview, the summary line last."""
    prices = '{"scripted": {"prompt": 1000, "completion": 2000}}'
    model.script(reply(None, ipython("print(6 * 7)")), reply("done"))
    result = run_cli("compute it", env={"RLM_PRICES": prices})
    assert result.returncode == 0 and result.stdout == "done\n", result.stderr
    lines = result.stderr.splitlines()
    assert any(line.endswith("turn 1: → 42") for line in lines), lines
    (folder,) = sessions(rlm_env)
    summary = re.fullmatch(
        r"rlm: 2 turns · [\d,]+ tokens · \$(\d+\.\d{4}) · \d+\.\d s · session (\S+)", lines[-1]
    )
    assert summary and float(summary.group(1)) > 0 and summary.group(2) == str(folder), lines


def test_each_message_of_a_session_is_a_fresh_run_of_the_same_root():
    """In-process, as interactive mode drives the view: the second message's row has its
    task, its own counts and no children of the first; one without an answer is not ✓."""
    from io import StringIO

    from rich.console import Console

    from rlm.agent import events as ev
    from rlm.cli.live import LiveView

    out = StringIO()
    view = LiveView(Console(file=out, width=100, color_system=None, force_terminal=False))

    def response(tool_calls: int) -> ev.ModelResponse:
        return ev.ModelResponse(
            agent_id="s", depth=0, turn=1, prompt_tokens=10, completion_tokens=5,
            latency=0.1, tool_calls=tool_calls, cost=0.5,
        )  # fmt: skip

    view.start("first message")
    view(ev.AgentStarted(agent_id="s", depth=0, parent_id=None, session_path="/p/s", task=""))
    view(ev.AgentStarted(agent_id="s/sub-1", depth=1, parent_id="s", session_path="/p", task="c"))
    view(response(0))
    view.stop()
    first = out.getvalue().splitlines()
    assert first[0].startswith("✓ s ") and first[0].endswith("— first message")
    assert first[1].startswith("  ● sub-1 ")
    assert first[-1].startswith("rlm: 1 turn · 15 tokens · $0.5000 · ") and first[-1].endswith(
        " · session /p/s"
    )
    view.start("second message")
    view(response(1))  # a tool call, then the message ends without an answer (cancelled)
    view.stop()
    second = out.getvalue().splitlines()[len(first) :]
    assert second[0].startswith("⊘ s ") and "turn 1 · 15 tok · $0.5000" in second[0]
    assert second[0].endswith("— second message") and "sub-1" not in "".join(second)
