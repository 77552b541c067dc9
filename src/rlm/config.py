"""Settings: one pydantic-settings model read from ``RLM_*`` environment variables.

CLI flags and keyword arguments of ``rlm.run`` are passed as init values and therefore win
over the environment. Every invalid value becomes a one-line :class:`ConfigError` that names
the variable (or the flag, when the value came from one).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rlm.errors import ConfigError

__all__ = [
    "BUILTIN_TOOLS",
    "Settings",
    "derive_settings",
    "env_name",
    "flag_name",
    "load_settings",
]

#: Every tool rlm ships, in the order they are described to the model.
BUILTIN_TOOLS: tuple[str, ...] = ("ipython", "summarize", "bash", "edit")


class Settings(BaseSettings):
    """Everything that shapes one run. Children inherit their parent's settings."""

    model_config = SettingsConfigDict(
        env_prefix="RLM_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    model: str = "gpt-4o"
    """Model name sent to the OpenAI-compatible endpoint."""

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RLM_API_KEY", "OPENAI_API_KEY")
    )
    """API key of the endpoint; falls back to ``OPENAI_API_KEY``. Never reaches a kernel."""

    base_url: str | None = None
    """Base URL of the OpenAI-compatible endpoint (e.g. ``http://localhost:8000/v1``)."""

    max_turns: int = Field(default=30, ge=1)
    """Maximum model turns (assistant messages) per agent before it is stopped."""

    max_depth: int = Field(default=0, ge=0)
    """Maximum recursion depth: 0 means no sub-agents, 2 allows children and grandchildren."""

    exec_timeout: float = Field(default=300.0, gt=0)
    """Seconds one tool execution may take; also the ceiling of a tool call's own timeout."""

    max_output: int = -1
    """Maximum characters of one tool result (-1: no cap; 0 is invalid)."""

    max_turns_in_context: int = -1
    """Maximum assistant turns kept in the live context (-1: all; 0 and 1 are invalid)."""

    max_tokens: int = Field(default=0, ge=0)
    """Completion-token budget of one agent (0: no budget)."""

    max_cost: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Dollar budget of the whole tree of one run, priced with ``RLM_PRICES`` (0: none)."""

    append_to_system_prompt: str | None = None
    """Extra instructions appended to the generated system prompt."""

    system_prompt_path: Path | None = None
    """File whose text replaces the generated system prompt (wins over the append)."""

    tools: Annotated[tuple[str, ...], NoDecode] = ("ipython", "summarize")
    """Enabled built-in tools, comma separated; an empty string enables none."""

    home: Path = Path(".rlm")
    """Root folder for session logs (``$RLM_HOME/sessions/<id>/``)."""

    sdk_max_retries: int = Field(default=0, ge=0)
    """Deprecated and ignored: the SDK no longer retries; ``RLM_RETRY_ATTEMPTS`` counts every attempt."""

    retry_attempts: int = Field(default=6, ge=1)
    """HTTP attempts per model call (connection errors, timeouts, 429, 5xx, malformed replies)."""

    retry_max_wait: float = Field(default=30.0, ge=0)
    """Longest wait in seconds between two attempts (random exponential backoff; caps ``Retry-After``)."""

    model_timeout: float = Field(default=300.0, gt=0)
    """Seconds one model request may take end to end, first byte to last; then it is retried."""

    max_completion_tokens: int = Field(default=0, ge=0)
    """``max_tokens`` sent with each model request (0: not sent, the endpoint decides)."""

    context_window: int = Field(default=0, ge=0)
    """Tokens the model's context holds (0: unknown); user messages over that many characters go to a kernel variable."""

    max_reply_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest decoded model reply accepted, in bytes; a larger one fails the call."""

    max_input_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Largest ``--input`` file read, in bytes; a larger one is refused before the run starts."""

    max_concurrency: int = Field(default=8, ge=1)
    """Sub-agents that may run at once per depth level; more are queued, not refused."""

    llm_concurrency: int = Field(default=16, ge=1)
    """`rlm.llm` model calls in flight at once for the whole run; more are queued."""

    max_message_bytes: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024)
    """Largest message part a kernel may send; a larger one is dropped unread (the model is
    told)."""

    max_pending_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    """Input bytes that sub-agent requests of a run may hold while they wait for a slot;
    a request beyond is refused."""

    max_pending_runs: int = Field(default=64, ge=0)
    """Sub-agent requests of one agent that may wait for a slot; one more is refused."""

    kernel_start: Literal["fork", "cold"] = "fork" if sys.platform.startswith("linux") else "cold"
    """How sub-agent kernels start: fork (from a pre-imported zygote; Linux) or cold."""

    kernel_pool: int = Field(default=2, ge=0)
    """Kernels kept started ahead once a run spawns its first sub-agent (0: no pool)."""

    @field_validator("max_output")
    @classmethod
    def _check_max_output(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be -1 (no cap) or a positive number of characters")
        return value

    @field_validator("max_turns_in_context")
    @classmethod
    def _check_turns_in_context(cls, value: int) -> int:
        if value in (0, 1) or value < -1:
            raise ValueError("must be -1 (keep all) or at least 2")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
                raise ValueError("must be printable ASCII without spaces or newlines")
        return value

    @field_validator("system_prompt_path")
    @classmethod
    def _check_prompt_path(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                value.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ValueError(f"cannot read {str(value)!r}: {reason}") from None
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _split_tools(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tools")
    @classmethod
    def _check_tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in BUILTIN_TOOLS]
        if unknown:
            raise ValueError(
                f"unknown tool {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(BUILTIN_TOOLS)}"
            )
        return tuple(dict.fromkeys(value))

    @property
    def key(self) -> str | None:
        """The API key as plain text, for the model client only."""
        return self.api_key.get_secret_value() if self.api_key else None


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"RLM_{field.upper()}"


def flag_name(field: str) -> str:
    """The CLI flag that sets ``field``."""
    return "--" + field.replace("_", "-")


def load_settings(**overrides: Any) -> Settings:
    """Read the environment, apply ``overrides`` (flags, keyword arguments), validate.

    ``None`` overrides are ignored so callers can pass every optional flag through.
    Raises :class:`ConfigError` with one line per bad value, naming the flag if the value came
    from ``overrides`` and the environment variable otherwise.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, given)) from None


def _describe(exc: ValidationError, given: dict[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        if field in ("RLM_API_KEY", "OPENAI_API_KEY"):
            name, field = field, "api_key"
        elif field == "api_key":
            name = "api_key"
        else:
            name = flag_name(field) if field in given else env_name(field)
        if error["type"] == "extra_forbidden":
            name = field
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        secret = field == "api_key"
        shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
        lines.append(f"{name}: {message}{shown}")
    return "; ".join(lines)


def derive_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` with ``overrides`` applied and validated, for a sub-agent or a ``Session``
    given both ``settings=`` and keyword arguments.

    Unlike :func:`load_settings` the environment is not read again: a setting the base left
    unset (``base_url=None``) stays unset. ``None`` overrides are ignored; an unknown name or
    a bad value is a :class:`ConfigError` naming the setting.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    if not given:
        return base
    try:
        return Settings.model_validate({**base.model_dump(), **given})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            if error["type"] == "extra_forbidden":
                problems.append(f"{name}: not a setting")
                continue
            shown = "" if name == "api_key" else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}{shown}")
        raise ConfigError("; ".join(problems)) from None
