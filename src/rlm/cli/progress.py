"""Progress on stderr: one calm line per step, so stdout carries only the answer.

Each tool call is a line with its input, then one with the start of its output; the root's
end is the run's summary line (turns, tokens, cost if priced, time, session folder), the
same line the live view prints.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rlm.agent import events as ev
from rlm.schema import Status
from rlm.terminal import NAME_LIMIT, safe

__all__ = ["LineProgress", "retry_line", "summary_line"]


class LineProgress:
    """An ``on_event`` callback printing plain lines; indentation shows depth."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._cost = 0.0
        self._tokens = 0
        self._session = ""

    def __call__(self, event: ev.Event) -> None:
        line = self.describe(event)
        if isinstance(event, ev.AgentStarted) and event.parent_id is None:
            self._session, self._cost, self._tokens = event.session_path, 0.0, 0
        elif isinstance(event, ev.ModelResponse):
            self._cost += event.cost
            self._tokens += (event.prompt_tokens or 0) + (event.completion_tokens or 0)
        elif isinstance(event, ev.LlmCallFinished):
            self._tokens += (event.prompt_tokens or 0) + (event.completion_tokens or 0)
        elif isinstance(event, ev.AgentFinished) and event.depth == 0:
            summary = summary_line(
                event.turns, self._tokens, self._cost, event.elapsed, self._session, event.status
            )
            line = f"{line}\n{summary}"
        if line:  # names, tasks and endpoint errors come from others: never raw to a terminal
            for part in line.split("\n"):
                print("  " * event.depth + safe(part), file=self.stream, flush=True)

    @staticmethod
    def describe(event: ev.Event) -> str | None:
        name = event.agent_id.rsplit("/", 1)[-1]
        if isinstance(event, ev.AgentStarted):
            if event.parent_id is None:
                return f"rlm: session {event.agent_id} ({event.session_path})"
            return f"[{name}] started: {_short(event.task)}"
        if isinstance(event, ev.ToolStarted):
            tool = safe(event.name, NAME_LIMIT)
            return f"[{name}] turn {event.turn}: {tool} {_short(event.preview)}"
        if isinstance(event, ev.ToolFinished):
            mark = "error" if event.error else "→"
            return f"[{name}] turn {event.turn}: {mark} {_short(event.preview)}"
        if isinstance(event, ev.ModelRetry):
            return _prefix(event) + retry_line(event)
        if isinstance(event, ev.EndpointWarning):
            return f"{_prefix(event)}rlm: warning: {event.message}"
        if isinstance(event, ev.KernelRestarted):
            return f"[{name}] kernel restarted ({event.reason})"
        if isinstance(event, ev.AgentFinished):
            tokens = event.prompt_tokens + event.completion_tokens
            return (
                f"[{name}] {event.status} ({event.stop_reason}) after {event.turns} "
                f"turn{'' if event.turns == 1 else 's'}, "
                f"{tokens} tokens, {event.elapsed:.1f} s"
            )
        return None


def retry_line(event: ev.ModelRetry) -> str:
    """E.g. ``model endpoint: connection refused, retrying in 4 s (2/6)``."""
    wait = f"{event.wait:.0f}" if event.wait >= 1 else f"{event.wait:.1f}"
    return (
        f"model endpoint: {event.reason}, retrying in {wait} s ({event.attempt}/{event.attempts})"
    )


def summary_line(
    turns: int, tokens: int, cost: float, seconds: float, session: str, ended: str = "done"
) -> str:
    """``rlm: 2 turns · 1,234 tokens · $0.0042 · 3.1 s · session <path>`` (no cost when
    nothing was priced). Tokens and cost are the whole tree's, turns the root's. A run that
    did not end with an answer says how it ended first (``rlm: cancelled · ...``): it is the
    last line a user reads."""
    parts = [] if ended == Status.DONE else [getattr(ended, "value", str(ended))]
    parts += [f"{turns} turn{'' if turns == 1 else 's'}", f"{tokens:,} tokens"]
    if cost:
        parts.append(f"${cost:.4f}")
    parts.append(f"{seconds:.1f} s")
    if session:
        parts.append(f"session {session}")
    return "rlm: " + " · ".join(parts)


def _prefix(event: ev.Event) -> str:
    """Nothing for the root agent, ``[sub-1a2b] `` for a sub-agent."""
    return "" if event.depth == 0 else f"[{event.agent_id.rsplit('/', 1)[-1]}] "


def _short(text: str, width: int = 70) -> str:
    line = " ".join(safe(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"
