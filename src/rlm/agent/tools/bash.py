"""The ``bash`` tool: run one shell command in the user's working directory.

Every call is a fresh ``bash -c`` in a new session (its own process group), so nothing the
model does in one call leaks into the next: no shell state (``cd``, ``export``) and no
processes. When bash exits, or the timeout runs out, or the calling task is cancelled, the
whole process group is killed with SIGKILL; a backgrounded ``server &`` therefore dies with
the call that started it instead of living on as an orphan. A process that leaves the group
(``setsid``, a double fork) dies too: bash runs under ``python -m rlm.sandbox.launch --exec``,
a subreaper that holds such orphans and kills them when bash exits; on a timeout we kill its
descendants before the group. The launcher also applies the sandbox (``RLM_SANDBOX``) and
the kernel limits (``RLM_KERNEL_MEMORY``/``RLM_KERNEL_PROCESSES``) to the command.

We drive the child through a :class:`asyncio.SubprocessProtocol` rather than
``asyncio.subprocess.Process``: ``Process.wait()`` only returns once every pipe is closed, so
a background grandchild that inherited stdout would make it hang. The protocol's
``process_exited`` callback tells us when bash itself is gone.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import subprocess
from pathlib import Path

from pydantic import BaseModel, Field

from rlm.agent.tools import remote
from rlm.agent.tools.base import Tool, ToolContext
from rlm.errors import ToolError
from rlm.kernels.environment import kernel_environment
from rlm.sandbox.escapees import kill_descendants
from rlm.sandbox.limits import limits_env
from rlm.sandbox.policy import command_policy, wrap_command
from rlm.truncation import Capture

__all__ = ["BashTool"]

#: Characters kept when ``max_output`` is -1 (no cap), as for a kernel cell: only keeps
#: memory bounded when a command prints without end.
DEFAULT_KEEP = 1_000_000

#: Seconds we keep reading after bash exited, for output its background children still
#: write, before the process group is killed. The common case (no background children) does
#: not wait at all: the pipe closes together with bash.
EXIT_GRACE = 0.2

#: Seconds we wait for the pipe to drain and the process to be reaped after a SIGKILL.
KILL_GRACE = 2.0


class _Capture:
    """The command's output, decoded (multi-byte characters may straddle chunks) and kept
    by rlm's head-and-tail policy (:mod:`rlm.truncation`) in bounded memory."""

    def __init__(self, limit: int) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._kept = Capture(limit)

    def feed(self, data: bytes) -> None:
        self._kept.add(self._decoder.decode(data))

    def text(self) -> str:
        """Everything kept, with the truncation note where characters were dropped."""
        self._kept.add(self._decoder.decode(b"", final=True))
        return self._kept.text()


class _BashProtocol(asyncio.SubprocessProtocol):
    """Feeds the shared stdout/stderr pipe into a :class:`_Capture` and signals exit and EOF."""

    def __init__(self, capture: _Capture) -> None:
        loop = asyncio.get_running_loop()
        self.capture = capture
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.capture.feed(data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class BashArgs(BaseModel):
    """Arguments of the ``bash`` tool."""

    command: str = Field(
        description="The bash command or script to run, e.g. `ls -la` or `pytest -q tests/`."
    )
    timeout: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds before the command is killed. Optional; defaults to, and is capped at, "
            "the agent's execution timeout."
        ),
    )


class BashTool(Tool):
    """Run a shell command; stateless, bounded in time and memory, leaves no processes."""

    name = "bash"
    description = (
        "Run a command with `bash -c` in the user's working directory and return its output "
        "(stdout and stderr interleaved in the order printed) followed by `[exit code: N]`.\n"
        "Each call is a fresh shell: `cd`, `export`, variables and functions do NOT carry over "
        "to the next call, so chain dependent steps in one command (`cd sub && make`). "
        "stdin is empty, so interactive programs get EOF; pass flags like `-y` instead. "
        "Background processes (`cmd &`) are killed when the call returns, so they cannot keep "
        "running between calls. A command that exceeds the timeout is killed together with "
        "all its child processes, and you get the output printed until then."
    )
    Args = BashArgs
    caps_own_output = True  # the exit code line must survive the cap

    async def run(self, args: BashArgs, ctx: ToolContext) -> str:
        """Run ``args.command`` and return its output and exit code (or a timeout note).

        With a remote kernel (``RLM_KERNEL_GATEWAY``) the command runs where the kernel runs,
        in its working directory, through the kernel (see :mod:`rlm.agent.tools.remote`)."""
        limit = float(ctx.settings.exec_timeout)
        if args.timeout is not None:
            limit = min(limit, float(args.timeout))
        keep = ctx.settings.max_output if ctx.settings.max_output > 0 else DEFAULT_KEEP
        kernel = remote.kernel_of(ctx, self.name)
        if kernel is not None:
            call = {"command": args.command, "limit": limit, "keep": keep}
            return await remote.call(kernel, self.name, call, limit + remote.SLACK)
        # The agent's kernel's sandbox (RLM_SANDBOX) applies to its bash commands too.
        policy = command_policy(getattr(ctx.kernel, "env", None), ctx.cwd)
        env = {**kernel_environment(), **limits_env(), **policy}
        return await run_command(args.command, cwd=ctx.cwd, env=env, limit=limit, keep=keep)


async def run_command(
    command: str, *, cwd: Path, env: dict[str, str], limit: float, keep: int
) -> str:
    """``bash -c command`` in ``cwd`` with ``env``: its output and exit code, or a timeout
    note; the process group is killed when it returns, times out or is cancelled."""
    capture = _Capture(keep)
    transport, protocol = await _spawn(command, cwd, env, capture)
    try:
        done, _ = await asyncio.wait([protocol.exited], timeout=limit)
        timed_out = not done
        if not timed_out:
            # bash is gone; give background children a moment to finish writing.
            await asyncio.wait([protocol.closed], timeout=EXIT_GRACE)
        if timed_out:  # the launcher still holds what bash detached: kill that first
            await asyncio.to_thread(kill_descendants, transport.get_pid())
        _kill_group(transport.get_pid())
        await asyncio.wait([protocol.exited, protocol.closed], timeout=KILL_GRACE)
    except BaseException:
        # Cancelled (or anything unexpected): never leave the command running.
        await _terminate(transport, protocol)
        raise
    finally:
        transport.close()

    output = capture.text()
    if output and not output.endswith("\n"):
        output += "\n"
    if timed_out:
        return f"{output}[timed out after {limit:g} s; the process group was killed]"
    return f"{output}[exit code: {transport.get_returncode()}]"


async def run_here(command: str, limit: float, keep: int) -> str:
    """:func:`run_command` in this process's working directory and environment (without
    credentials): what a remote kernel runs for the ``bash`` tool."""
    return await run_command(
        command, cwd=Path.cwd(), env=kernel_environment(), limit=limit, keep=keep
    )


async def _spawn(
    command: str, cwd: Path, env: dict[str, str], capture: _Capture
) -> tuple[asyncio.SubprocessTransport, _BashProtocol]:
    """Start ``bash -c command`` as the leader of a new session, reading into ``capture``.

    The start is shielded from cancellation: bash may already be running (and forking) while
    asyncio still connects the pipes, and asyncio's own clean-up would then kill bash alone
    and orphan its children. So on cancellation we let the start finish and kill the group.
    """
    loop = asyncio.get_running_loop()
    start = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _BashProtocol(capture),
            *wrap_command(["bash", "-c", command], env),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    try:
        transport, protocol = await asyncio.shield(start)
    except OSError as exc:
        raise ToolError(f"could not start bash in {cwd}: {exc}") from None
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([start], timeout=KILL_GRACE)
        if start.done():
            if not start.cancelled() and start.exception() is None:
                await _terminate(*start.result())
        else:  # still starting after the grace period: clean up whenever it is done
            start.add_done_callback(_terminate_late)
        raise
    return transport, protocol


async def _terminate(transport: asyncio.SubprocessTransport, protocol: _BashProtocol) -> None:
    """Kill the group, wait (bounded) until bash is reaped, then close the transport.

    Waiting for the reap keeps the transport from being closed and collected while the child
    watcher still owes it the exit status (a "subprocess still running" ResourceWarning).
    SIGKILL is prompt, so the wait is short even when we are being cancelled.
    """
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(asyncio.to_thread(kill_descendants, transport.get_pid()))
    _kill_group(transport.get_pid())
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait([protocol.exited], timeout=KILL_GRACE)
    transport.close()


def _terminate_late(
    start: asyncio.Future[tuple[asyncio.SubprocessTransport, _BashProtocol]],
) -> None:
    """Done-callback of a start we stopped waiting for: kill what it started, if anything."""
    if start.cancelled() or start.exception() is not None:
        return
    transport = start.result()[0]
    _kill_group(transport.get_pid())
    transport.close()


def _kill_group(pgid: int) -> None:
    """SIGKILL every process of the command's group; a group already gone is fine.

    bash runs as a session leader, so its pid is the process group id.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
