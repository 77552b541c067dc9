"""Typed contracts shared by every process side: what is written to a session folder, sent
over the control channel or reported as an event.

Pure data (enums and pydantic models) with no I/O, so the orchestrator, the kernels, the
session readers and the CLI can all import it without pulling in ZeroMQ or the model client.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Status", "StopReason"]


class Status(str, Enum):
    """Where an agent is in its life, as ``meta.json`` records it."""

    RUNNING = "running"
    """Still running (or the orchestrator died before it could say otherwise)."""
    DONE = "done"
    """Ended with an answer, or closed after its last answer."""
    ERROR = "error"
    """Ended without an answer; ``stop_reason`` says why."""
    CANCELLED = "cancelled"
    """Cancelled from outside (Ctrl-C, SIGTERM, its cell ended, its parent was cancelled)."""

    def __str__(self) -> str:
        return self.value


class StopReason(str, Enum):
    """Why an agent (or its last turn) ended."""

    ANSWER = "answer"
    """The model replied with text and no tool call: the final answer."""
    CLOSED = "closed"
    """Closed by its owner before any turn ended (an interactive session with no message)."""
    CANCELLED = "cancelled"
    """See :attr:`Status.CANCELLED`."""
    MAX_TURNS = "max_turns"
    """``RLM_MAX_TURNS`` model turns without a final answer."""
    TOKEN_BUDGET = "token_budget"
    """``RLM_MAX_TOKENS`` completion tokens spent."""
    COST_BUDGET = "cost_budget"
    """``RLM_MAX_COST`` dollars spent by the whole tree (priced with ``RLM_PRICES``)."""
    LENGTH = "length"
    """The endpoint cut the reply at its token limit (``finish_reason: length``) and the
    agent could not get a complete answer."""
    MODEL_ERROR = "model_error"
    """The model endpoint failed for good (retries exhausted, a non-retryable error)."""
    KERNEL_ERROR = "kernel_error"
    """The agent's kernel could not be started or driven."""
    CRASH = "crash"
    """An unexpected exception in rlm itself (a bug: the log has the details)."""
    ERROR = "error"
    """Any other error."""

    def __str__(self) -> str:
        return self.value
