"""``rlm.Session``: one agent kept alive across user messages.

The same kernel, history and session folder serve every ``send``. Cancelling a ``send``
(task cancel, Ctrl-C) interrupts the kernel, cancels the sub-agents it started and rolls
the history back to before that message, so the session stays usable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rlm.agent.events import EventCallback
from rlm.agent.loop import Agent
from rlm.agent.model import Usage
from rlm.config import Settings, derive_settings, load_settings
from rlm.errors import ConfigError, RLMError
from rlm.runtime.orchestrator import Orchestrator
from rlm.safeio import read_regular

__all__ = ["Session", "load_context_file", "validate_context"]


class Session:
    """``async with rlm.Session(model=...) as s: await s.send("...")``.

    ``context`` is a list of ``{"role": "user"|"assistant", "content": str}`` placed after
    the system prompt; ``resume`` continues an earlier session by id (its live context is
    rebuilt from ``messages.jsonl``, in a fresh kernel). ``functions`` are host functions
    that every kernel of the tree can call (see :mod:`rlm.runtime.functions`); ``mcp_config``
    (a path, or a dict of the same shape) names MCP servers whose tools every kernel can call
    (see :mod:`rlm.runtime.mcp`). Other keyword
    arguments override settings, as CLI flags do.
    """

    def __init__(
        self,
        *,
        on_event: EventCallback | None = None,
        cwd: Path | None = None,
        context: list[dict[str, Any]] | None = None,
        resume: str | None = None,
        inputs: dict[str, Any] | None = None,
        settings: Settings | None = None,
        functions: Iterable[Callable[..., Any]] = (),
        **overrides: Any,
    ) -> None:
        if context is not None:
            validate_context(context, "context")
        # a dict of the config file's shape is passed as it is (a path is a setting)
        mcp = overrides.pop("mcp_config") if isinstance(overrides.get("mcp_config"), dict) else None
        if isinstance(overrides.get("tools"), (list, tuple)):
            overrides["tools"] = ",".join(overrides["tools"])
        if settings is not None:
            # keyword arguments refine the given settings; an unknown one is an error
            self.settings = derive_settings(settings, **overrides)
        else:
            self.settings = load_settings(**overrides)
        self._orchestrator = Orchestrator(
            self.settings, cwd=cwd, on_event=on_event, functions=functions, mcp_config=mcp
        )
        self._context = context
        self._resume = resume
        self._inputs = inputs
        self._agent: Agent | None = None

    @property
    def path(self) -> Path:
        """The session folder (``$RLM_HOME/sessions/<id>``)."""
        return self._require().log.path

    @property
    def id(self) -> str:
        return self._require().id

    @property
    def usage(self) -> Usage:
        """Tokens of the whole tree so far."""
        return self._require().usage_total

    @property
    def cost(self) -> float:
        """Dollars of the whole tree so far, priced with ``RLM_PRICES`` (0 without prices)."""
        return self._require().log.meta.cost_total

    def _require(self) -> Agent:
        if self._agent is None:
            raise RLMError("the session is not open: use `async with Session(...)`")
        return self._agent

    async def __aenter__(self) -> Session:
        await self._orchestrator.__aenter__()
        try:
            await self._open()
        except BaseException as exc:
            try:
                if self._agent is not None:  # its folder exists: end it with the reason
                    await self._agent.close(exc)
                    self._agent = None
            finally:
                await self._orchestrator.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._agent is not None:
                error = exc_info[1] if isinstance(exc_info[1], BaseException) else None
                await self._agent.close(error)
                self._agent = None
        finally:
            await self._orchestrator.__aexit__(*exc_info)

    async def _open(self) -> None:
        orch = self._orchestrator
        if self._resume:
            agent = orch.resume_root(self._resume)
            self._resume = None
        else:
            agent = await orch.new_root("", inputs=self._inputs, context=self._context)
            self._inputs = None  # packed into the agent now (and reset() starts without them)
        self._agent = agent
        await agent.open()

    def history(self) -> list[dict[str, Any]]:
        """The conversation after the system prompt, as the live context holds it (a resumed
        session's is rebuilt from its log): what a front end shows of an earlier session."""
        return [m for m in self._require().context.messages() if m.get("role") != "system"]

    async def send(self, message: str) -> str:
        """Run one user turn to its answer (raises ``AgentError`` if it ends without one)."""
        return await self._require().send(message)

    async def reset(self) -> None:
        """A new kernel and an empty history, in a new session folder."""
        if self._agent is not None:
            await self._agent.close()
            self._agent = None
        self._context = None
        self._inputs = None
        await self._open()


def validate_context(value: Any, name: str) -> list[dict[str, str]]:
    """A context is a list of ``{"role": "user"|"assistant", "content": str}``."""
    if not isinstance(value, list):
        raise ConfigError(f"{name}: expected a JSON list of messages, got {type(value).__name__}")
    for index, item in enumerate(value):
        ok = (
            isinstance(item, dict)
            and set(item) == {"role", "content"}
            and item["role"] in ("user", "assistant")
            and isinstance(item["content"], str)
        )
        if not ok:
            raise ConfigError(
                f'{name}: item {index} must be {{"role": "user"|"assistant", "content": str}}'
            )
    return value


#: Largest ``--context`` file read (it all goes into the prompt, so real ones are far smaller).
MAX_CONTEXT_BYTES = 64 << 20


def load_context_file(path: str) -> list[dict[str, str]]:
    """The messages of a ``--context`` file: a regular file (never a FIFO or a device, which
    would block or never end) of at most ``MAX_CONTEXT_BYTES``."""
    try:
        data = json.loads(read_regular(path, MAX_CONTEXT_BYTES, follow=True).decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"--context: cannot read {path!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--context: {path!r} is not valid JSON ({exc})") from None
    return validate_context(data, "--context")
