"""Tests of the ``bash`` and ``edit`` built-in tools."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from rlm.agent.tools.base import ToolContext
from rlm.agent.tools.bash import BashTool
from rlm.agent.tools.edit import EditTool
from rlm.config import load_settings
from rlm.errors import ToolError
from rlm.logs.procs import pid_alive


def make_ctx(tmp_path: Path, **settings: object) -> ToolContext:
    settings.setdefault("exec_timeout", 10.0)
    return ToolContext(settings=load_settings(**settings), cwd=tmp_path)


async def bash(ctx: ToolContext, command: str, timeout: int | None = None) -> str:
    tool = BashTool()
    args = tool.Args(command=command, timeout=timeout)
    # A hanging tool must fail the test, not the test run.
    return await asyncio.wait_for(tool.run(args, ctx), timeout=15)


async def edit(ctx: ToolContext, path: str, old_str: str, new_str: str) -> str:
    tool = EditTool()
    return await tool.run(tool.Args(path=path, old_str=old_str, new_str=new_str), ctx)


def is_dead(pid: int) -> bool:
    """True when ``pid`` no longer runs; a zombie (killed, not yet reaped by init) is dead."""
    return not pid_alive(pid)


async def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


# --- bash -------------------------------------------------------------------------------------


async def test_bash_output_and_exit_code(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert await bash(ctx, "echo hello") == "hello\n[exit code: 0]"
    assert await bash(ctx, "printf 'no newline'; exit 3") == "no newline\n[exit code: 3]"
    assert await bash(ctx, "true") == "[exit code: 0]"


async def test_bash_interleaves_stdout_and_stderr(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert await bash(ctx, "echo a; echo b >&2; echo c") == "a\nb\nc\n[exit code: 0]"


async def test_bash_runs_in_cwd(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("x")
    out = await bash(make_ctx(tmp_path), "pwd; ls")
    assert out.splitlines()[:2] == [str(tmp_path), "marker.txt"]


async def test_bash_stdin_is_empty(tmp_path: Path) -> None:
    assert await bash(make_ctx(tmp_path), "cat; echo done") == "done\n[exit code: 0]"


async def test_bash_is_stateless(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    (tmp_path / "sub").mkdir()
    await bash(ctx, "export RLM_TEST_VAR=leaked; cd sub")
    out = await bash(ctx, 'echo "var=${RLM_TEST_VAR:-unset}"; pwd')
    assert out == f"var=unset\n{tmp_path}\n[exit code: 0]"


async def test_bash_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    out = await bash(make_ctx(tmp_path), r"printf 'caf\xc3\xa9 \xff!\n'")
    assert out == "café \ufffd!\n[exit code: 0]"


async def test_bash_timeout_kills_grandchild(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, exec_timeout=0.5)
    # The model's own timeout is capped at exec_timeout.
    out = await bash(ctx, "echo started; sleep 1000 & echo $! > pid; wait", timeout=100)
    assert out.startswith("started\n")
    assert out.endswith("[timed out after 0.5 s; the process group was killed]")
    pid = int((tmp_path / "pid").read_text())
    assert await wait_until(lambda: is_dead(pid)), f"grandchild {pid} survived the timeout"


async def test_bash_background_process_does_not_hang(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, exec_timeout=30.0)
    started = time.monotonic()
    out = await bash(ctx, "sleep 1000 & echo $! > pid; echo done")
    assert time.monotonic() - started < 5
    assert out == "done\n[exit code: 0]"
    pid = int((tmp_path / "pid").read_text())
    assert await wait_until(lambda: is_dead(pid)), f"background process {pid} outlived the call"


async def test_bash_cancel_kills_process_group(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, exec_timeout=30.0)
    task = asyncio.create_task(bash(ctx, "sleep 1000 & echo $! > pid; wait"))
    pid_file = tmp_path / "pid"
    assert await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pid_file.read_text())
    assert await wait_until(lambda: is_dead(pid)), f"grandchild {pid} survived cancellation"


async def test_bash_setsid_and_double_fork_escapees_die_with_the_call(tmp_path: Path) -> None:
    """A process that left the command's process group (``setsid``) or was orphaned by a
    double fork does not outlive the call (as for a kernel's cells)."""
    ctx = make_ctx(tmp_path, exec_timeout=30.0)
    out = await bash(
        ctx,
        "setsid sleep 7431 >/dev/null 2>&1 & echo $! > a; "
        "( setsid sleep 7432 >/dev/null 2>&1 & echo $! > b ) ; echo done",
    )
    assert out == "done\n[exit code: 0]"
    for name in ("a", "b"):
        pid = int((tmp_path / name).read_text())
        assert await wait_until(lambda pid=pid: is_dead(pid)), (
            f"escapee {pid} ({name}) outlived the call"
        )


async def test_bash_setsid_escapee_dies_on_timeout(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, exec_timeout=0.5)
    out = await bash(ctx, "setsid sleep 7433 >/dev/null 2>&1 & echo $! > pid; wait")
    assert out.endswith("[timed out after 0.5 s; the process group was killed]")
    pid = int((tmp_path / "pid").read_text())
    assert await wait_until(lambda: is_dead(pid)), f"escapee {pid} survived the timeout"


async def test_bash_exit_by_signal_is_reported(tmp_path: Path) -> None:
    assert await bash(make_ctx(tmp_path), "kill -TERM $$") == "[exit code: -15]"


async def test_bash_commands_get_the_kernel_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RLM_KERNEL_MEMORY`` bounds a bash command as it bounds a kernel: a 2 GiB allocation
    fails in the command, and the call returns normally."""
    monkeypatch.setenv("RLM_KERNEL_MEMORY", "512M")
    out = await bash(
        make_ctx(tmp_path), "python3 -c 'bytearray(2 << 30)' 2>&1 | tail -1; ulimit -d"
    )
    assert "MemoryError" in out
    assert out.endswith(f"{512 * 1024}\n[exit code: 0]")


def running_with_args(*argv: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line is exactly ``argv``."""
    wanted = "\0".join(argv) + "\0"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_text()
        except OSError:
            continue
        if cmdline == wanted and not is_dead(int(entry.name)):
            pids.append(int(entry.name))
    return pids


async def test_bash_cancel_while_starting_leaves_no_process(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, exec_timeout=30.0)
    marker = str(900_000 + os.getpid() % 10_000)
    task = asyncio.create_task(BashTool().run(BashTool.Args(command=f"sleep {marker}"), ctx))
    # One loop turn: bash is forked synchronously, then the task awaits the pipe set-up.
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: not running_with_args("sleep", marker))


async def test_bash_output_memory_is_bounded(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, max_output=100)
    out = await bash(ctx, "echo BEGIN; yes x | head -c 100000; echo END")
    assert out.startswith("BEGIN\n")
    assert out.endswith("END\n[exit code: 0]")
    assert "[output truncated: " in out and "more characters dropped]" in out
    assert len(out) < 300


async def test_bash_missing_cwd_is_a_tool_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="could not start bash"):
        await bash(make_ctx(tmp_path / "nope"), "true")


# --- edit -------------------------------------------------------------------------------------


async def test_edit_replaces_single_occurrence_and_shows_snippet(tmp_path: Path) -> None:
    target = tmp_path / "code.py"
    target.write_text("".join(f"line {i}\n" for i in range(1, 21)))
    out = await edit(make_ctx(tmp_path), "code.py", "line 10\n", "changed 10\nadded\n")
    assert target.read_text().splitlines()[8:12] == ["line 9", "changed 10", "added", "line 11"]
    assert out.startswith("Edited code.py (lines 10-11):\n")
    snippet = out.splitlines()[1:]
    assert snippet == [
        "     7\tline 7",
        "     8\tline 8",
        "     9\tline 9",
        "    10\tchanged 10",
        "    11\tadded",
        "    12\tline 11",
        "    13\tline 12",
        "    14\tline 13",
    ]


async def test_edit_not_found_leaves_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("alpha\nbeta\n")
    with pytest.raises(ToolError, match="0 occurrences"):
        await edit(make_ctx(tmp_path), "a.txt", "gamma", "delta")
    assert target.read_text() == "alpha\nbeta\n"


async def test_edit_multiple_occurrences_says_count(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("x = 1\ny = 2\nx = 1\n")
    with pytest.raises(ToolError, match="found 2 times") as info:
        await edit(make_ctx(tmp_path), "a.txt", "x = 1", "x = 3")
    assert "more surrounding context" in str(info.value)
    assert target.read_text() == "x = 1\ny = 2\nx = 1\n"


async def test_edit_counts_overlapping_occurrences(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("aaa")
    with pytest.raises(ToolError, match="found 2 times"):
        await edit(make_ctx(tmp_path), "a.txt", "aa", "b")


async def test_edit_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"file not found: nope\.txt"):
        await edit(make_ctx(tmp_path), "nope.txt", "a", "b")
    assert not (tmp_path / "nope.txt").exists()


async def test_edit_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ToolError, match="is a directory"):
        await edit(make_ctx(tmp_path), "d", "a", "b")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"abc\x00def", "binary file"), (b"caf\xe9 latin-1", "not valid UTF-8")],
)
async def test_edit_binary_file(tmp_path: Path, content: bytes, reason: str) -> None:
    target = tmp_path / "blob.bin"
    target.write_bytes(content)
    with pytest.raises(ToolError, match=reason):
        await edit(make_ctx(tmp_path), "blob.bin", "abc", "xyz")
    assert target.read_bytes() == content


async def test_edit_empty_old_str(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("abc")
    with pytest.raises(ToolError, match="old_str is empty"):
        await edit(make_ctx(tmp_path), "a.txt", "", "x")
    assert (tmp_path / "a.txt").read_text() == "abc"


async def test_edit_keeps_permissions_and_accepts_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_text("echo old\n")
    target.chmod(0o754)
    await edit(make_ctx(tmp_path / "elsewhere"), str(target), "old", "new")
    assert target.read_text() == "echo new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o754
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sh"]  # no temp file left


async def test_edit_crlf_file_with_lf_old_str(tmp_path: Path) -> None:
    target = tmp_path / "win.txt"
    target.write_bytes(b"one\r\ntwo\r\nthree\r\n")
    await edit(make_ctx(tmp_path), "win.txt", "one\ntwo", "1\n2")
    assert target.read_bytes() == b"1\r\n2\r\nthree\r\n"
