"""``rlm`` without a prompt: one turn per line on one ``Session``.

Ctrl-C cancels the running turn and returns to the prompt; a second Ctrl-C within a second,
Ctrl-D or ``/exit`` quits (kernels are shut down). When stdin is not a terminal the lines
are read as they come, with no prompt decoration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
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
anything else is a message to the agent; Ctrl-C cancels a running turn."""


def run_interactive(
    make_session: Callable[[], Session],
    *,
    show: Callable[[str], None],
    before_turn: Callable[[], None] = lambda: None,
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
    session = make_session()
    code = 0
    try:
        loop.run_until_complete(session.__aenter__())
        if tty:
            print(f"rlm session {session.id} — /help for commands", file=sys.stderr)
        last_interrupt = 0.0
        while True:
            try:
                line = input("rlm> " if tty else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                if time.monotonic() - last_interrupt < 1.0:
                    break
                last_interrupt = time.monotonic()
                print("\n(Ctrl-C again to quit)", file=sys.stderr)
                continue
            command = line.strip()
            if not command:
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
            before_turn()
            code = 1  # until the turn gives an answer
            try:
                try:
                    result, quit_now, interrupted_at = _turn(loop, session, command)
                finally:
                    after_turn()
                last_interrupt = max(last_interrupt, interrupted_at)
                if result is not None:
                    show(result)
                    code = 0
                if quit_now:
                    break
            except KeyboardInterrupt:
                # A Ctrl-C after the turn's handler is gone and before the prompt: counted
                # as one at the prompt, never a traceback.
                if time.monotonic() - last_interrupt < 1.0:
                    break
                last_interrupt = time.monotonic()
                print("\n(Ctrl-C again to quit)", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(session.__aexit__(None, None, None))
        loop.close()
    return code


def _turn(loop: asyncio.AbstractEventLoop, session: Session, text: str) -> tuple[Any, bool, float]:
    """Run one turn; Ctrl-C cancels it, a second one within a second also quits.

    Returns the answer (None if there is none), whether to quit, and when the last Ctrl-C
    came, so one pressed right after the turn ends at the prompt still counts as the second.
    """
    task = loop.create_task(session.send(text))
    interrupts: list[float] = [0.0]
    quit_now = False

    def on_interrupt() -> None:
        nonlocal quit_now
        now = time.monotonic()
        if now - interrupts[-1] < 1.0:
            quit_now = True
        interrupts.append(now)
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
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
    return result, quit_now, interrupts[-1]
