"""The one exception tree of rlm.

Control flow between the agent loop, the orchestrator and the CLI goes through these
classes, so callers can catch ``rlm.RLMError`` and know they caught everything rlm raises.
"""

from __future__ import annotations

from rlm.schema import StopReason

__all__ = [
    "AgentError",
    "ConfigError",
    "ContextOverflowError",
    "DepthLimitError",
    "FunctionError",
    "KernelDiedError",
    "KernelError",
    "LlmError",
    "LogWriteError",
    "ModelError",
    "RLMError",
    "SessionBusyError",
    "ToolError",
]


class RLMError(Exception):
    """Base class of every error rlm raises on purpose."""


class ConfigError(RLMError):
    """A setting, flag or input file is invalid; the CLI exits with code 2."""


class SessionBusyError(ConfigError):
    """The session is being written by another rlm process (``--resume`` of a running one)."""


class ModelError(RLMError):
    """The model endpoint failed for good (retries exhausted or a non-retryable error)."""


class ContextOverflowError(ModelError):
    """The endpoint refused the conversation as longer than its context window (HTTP 400
    ``context_length_exceeded`` and the like): the agent may compact and try again."""


class KernelError(RLMError):
    """The Jupyter kernel could not be started or driven."""


class KernelDiedError(KernelError):
    """The kernel process exited while rlm was using it."""


class DepthLimitError(RLMError):
    """``rlm.run`` was called where no sub-agent is allowed (``RLM_MAX_DEPTH``)."""


class AgentError(RLMError):
    """An agent ended without an answer (max turns, token budget, model error, ...).

    ``message`` is the bare reason in words (what ``meta.json`` records as ``error``);
    ``reason`` is the stop reason recorded in the agent's ``meta.json``; ``session_path``
    is the agent's session folder, where its full log lives. ``str(exc)`` adds that folder
    for humans; code that needs the message alone reads ``exc.message``.
    """

    def __init__(
        self, message: str, *, reason: str = StopReason.ERROR, session_path: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        """The bare message, without the session path ``str()`` adds for people."""
        self.reason = reason
        self.session_path = session_path

    def __str__(self) -> str:
        text = super().__str__()
        if self.session_path:
            text += f" (session: {self.session_path})"
        return text


class ToolError(RLMError):
    """A tool call failed in a way the model should hear about (sent back as the tool result)."""


class LlmError(RLMError):
    """An ``rlm.llm`` call failed (the model endpoint gave up, or the call was refused).

    ``rlm.llm_batch`` returns it in place of a failed item, so a cell tests
    ``isinstance(item, rlm.LlmError)`` and reads ``item.message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FunctionError(RLMError):
    """A host function call failed: a bad argument, an unserialisable result, or an
    exception the function raised (its type and message are in ``message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
class LogWriteError(AgentError):
    """The session log could not be written (disk full, file size limit, I/O error).

    An :class:`AgentError` so the run ends as any failed agent does: one line for the user,
    exit code 1, the final ``meta.json`` written when the disk still allows it (reason
    ``error``)."""
