"""``rlm`` without a prompt: one turn per message on one ``Session``.

A message is one line; a line ending in a backslash continues on the next, and a line that is
just three double quotes opens a block sent verbatim (indentation kept) up to the next such
line, so pasted code or text stays one message. A line starting with ``/word`` is a command;
an unknown one is refused rather than sent to the model.

Ctrl-C cancels the running turn and returns to the prompt; Ctrl-D or ``/exit`` quits with the
last turn's status (0 answer, 1 none); a second Ctrl-C within a second quits with 130 and
SIGTERM with 143 (the exit codes of ``rlm "task"``), kernels shut down in every case. When
stdin is not a terminal the lines are read as they come, with no prompt decoration.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlm.errors import AgentError
from rlm.runtime.session import Session
from rlm.terminal import safe

__all__ = ["run_interactive"]

HELP = """commands:
  /help     this text
  /reset    new kernel and empty history (a new session folder)
  /session  path of this session's log folder
  /exit     quit (also Ctrl-D, or Ctrl-C twice within a second)
anything else is a message to the agent; Ctrl-C cancels a running turn.
multi-line: end a line with \\ to continue it, or put the message between two lines of \"\"\"."""

#: Where a message starts with something shaped like a command (``/foo``, not ``/etc/x``).
_COMMAND = re.compile(r"/[A-Za-z][\w-]*(?=\s|$)")
_KNOWN = ("/help", "/reset", "/session", "/exit", "/quit")
_BLOCK = '"""'

#: Exit codes of a quit by signal, as ``rlm "task"`` uses them (128 + signal number).
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class _Terminated(Exception):
    """SIGTERM arrived while rlm waited at the prompt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


def _second_interrupt(last: float) -> bool:
    """A Ctrl-C at the prompt: True when it is the second within a second (quit), else
    say how to quit."""
    if time.monotonic() - last < 1.0:
        return True
    print("\n(Ctrl-C again to quit)", file=sys.stderr)
    return False


def _block_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def read_message(prompt: str, more: str) -> str:
    """One message from stdin: a line, a backslash-continued run of lines, or a block
    between two lines of three double quotes, kept verbatim. Raises EOFError at end of input (a block cut by it is still sent)."""
    line = input(prompt)
    if line.strip() == _BLOCK:
        lines: list[str] = []
        while True:
            try:
                nxt = input(more)
            except EOFError:
                if not lines:
                    raise
                break
            if nxt.strip() == _BLOCK:
                break
            lines.append(nxt)
        return "\n".join(lines)
    parts = [line]
    while parts[-1].endswith("\\"):
        parts[-1] = parts[-1][:-1]
        try:
            parts.append(input(more))
        except EOFError:
            break
    return "\n".join(parts)


def run_interactive(
    make_session: Callable[[], Session],
    *,
    show: Callable[[str], None],
    before_turn: Callable[[str], None] = lambda text: None,
    after_turn: Callable[[], None] = lambda: None,
) -> int:
    tty = sys.stdin.isatty()
    # an undecodable byte in a line must not end the session; clean_text replaces it later
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    if tty:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    loop = asyncio.new_event_loop()
    # Signals must reach the main thread, which waits in input() at the prompt: a SIGTERM the
    # kernel hands to an idle worker thread would never interrupt that wait.
    loop.set_default_executor(ThreadPoolExecutor(initializer=_block_signals))
    session = make_session()
    code = 0
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        loop.run_until_complete(session.__aenter__())
        if tty:
            print(f"rlm session {session.id} — /help for commands", file=sys.stderr)
        last_interrupt = 0.0
        while True:
            try:
                message = read_message("rlm> " if tty else "", "...> " if tty else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                if _second_interrupt(last_interrupt):
                    code = EXIT_SIGINT
                    break
                last_interrupt = time.monotonic()
                continue
            command = message.strip()
            if not command:
                continue
            word = _COMMAND.match(command) if "\n" not in message else None
            if word and word.group() not in _KNOWN:
                print(f"unknown command {word.group()}; /help lists them", file=sys.stderr)
                continue
            if command in ("/exit", "/quit"):
                break
            if command == "/help":
                print(HELP, file=sys.stderr)
                continue
            if command == "/session":
                print(session.path, flush=True)
                continue
            if command == "/reset":
                loop.run_until_complete(session.reset())
                print(f"new session {session.id}", file=sys.stderr)
                continue
            # a single line is trimmed; a multi-line message keeps its indentation
            text = message if "\n" in message else command
            before_turn(text)
            code = 1  # until the turn gives an answer
            try:
                try:
                    result, quit_code, interrupted_at = _turn(loop, session, text)
                finally:
                    after_turn()
                    signal.signal(signal.SIGTERM, _raise_terminated)  # the loop reset it
                last_interrupt = max(last_interrupt, interrupted_at)
                if result is not None:
                    show(result)
                    code = 0
                if quit_code:
                    code = quit_code
                    break
            except KeyboardInterrupt:
                # A Ctrl-C after the turn's handler is gone and before the prompt: counted
                # as one at the prompt, never a traceback.
                if _second_interrupt(last_interrupt):
                    code = EXIT_SIGINT
                    break
                last_interrupt = time.monotonic()
    except _Terminated:
        code = EXIT_SIGTERM
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # shutting down: let it finish
        with contextlib.suppress(Exception):
            loop.run_until_complete(session.__aexit__(None, None, None))
        loop.close()
        signal.signal(signal.SIGTERM, previous_term)
    return code


def _turn(loop: asyncio.AbstractEventLoop, session: Session, text: str) -> tuple[Any, int, float]:
    """Run one turn; Ctrl-C cancels it, a second one within a second also quits, SIGTERM
    cancels it and quits.

    Returns the answer (None if there is none), the exit code to quit with (0: stay), and
    when the last Ctrl-C came, so one pressed right after the turn ends at the prompt still
    counts as the second.
    """
    task = loop.create_task(session.send(text))
    interrupts: list[float] = [0.0]
    quit_code = 0

    def on_interrupt() -> None:
        nonlocal quit_code
        now = time.monotonic()
        if now - interrupts[-1] < 1.0:
            quit_code = quit_code or EXIT_SIGINT
        interrupts.append(now)
        task.cancel()

    def on_terminate() -> None:
        nonlocal quit_code
        quit_code = EXIT_SIGTERM
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGTERM, on_terminate)
    result = None
    try:
        result = loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("(cancelled)", file=sys.stderr)
    except AgentError as exc:
        print(f"rlm: {safe(exc)}", file=sys.stderr)
    finally:
        # A Ctrl-C that came as the turn ended waits in the loop's self-pipe: handle it now
        # (it may be the second, which quits) instead of dropping it with the handler.
        loop.run_until_complete(asyncio.sleep(0))
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    return result, quit_code, interrupts[-1]
