"""Settings: one pydantic-settings model read from ``RLM_*`` environment variables and TOML files.

CLI flags and keyword arguments of ``rlm.run`` are passed as init values and therefore win
over the environment, which wins over a project ``rlm.toml`` (in the working directory),
which wins over the user's ``$XDG_CONFIG_HOME/rlm/config.toml`` (``~/.config/rlm/``), which
wins over the defaults. Every invalid value becomes a one-line :class:`ConfigError` that
names the variable, the flag or the file it came from. A project file never holds the API key:
it is meant to be committed, and a committed key leaks.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rlm.errors import ConfigError

__all__ = [
    "BUILTIN_TOOLS",
    "PROJECT_FILE",
    "Settings",
    "config_files",
    "derive_settings",
    "env_name",
    "flag_name",
    "load_settings",
    "setting_descriptions",
]

#: Every tool rlm ships, in the order they are described to the model.
BUILTIN_TOOLS: tuple[str, ...] = ("ipython", "summarize", "bash", "edit")

#: The project settings file, read from the working directory.
PROJECT_FILE = "rlm.toml"

#: Settings whose bad value is never quoted back (a gateway URL may hold a password).
_SECRET_VALUES = frozenset({"api_key", "kernel_gateway", "kernel_gateway_token"})

#: Keys a project file may not hold: it is meant to be committed next to the code.
_NOT_IN_PROJECT_FILE = frozenset({"api_key", "RLM_API_KEY", "OPENAI_API_KEY"})


def user_config_file() -> Path:
    """``$XDG_CONFIG_HOME/rlm/config.toml``, ``~/.config/rlm/config.toml`` without it."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if not base:
        try:
            base = str(Path.home() / ".config")
        except RuntimeError:  # no HOME and no passwd entry: there is no user file
            return Path("/nonexistent/rlm/config.toml")
    return Path(base) / "rlm" / "config.toml"


def config_files() -> list[Path]:
    """The settings files read, lowest precedence first: the user file, then the project
    file (both optional)."""
    return [user_config_file(), Path.cwd() / PROJECT_FILE]


def _toml_source(settings_cls: type[BaseSettings], path: Path) -> TomlConfigSettingsSource:
    """The TOML source of ``path``; unreadable or malformed TOML is one ConfigError line."""
    try:
        source = TomlConfigSettingsSource(settings_cls, toml_file=path)
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.name == PROJECT_FILE and _NOT_IN_PROJECT_FILE.intersection(source.toml_data):
        raise ConfigError(
            f"{path}: the API key does not belong in a project file (it gets committed); "
            "set RLM_API_KEY in the environment or in "
            f"{user_config_file()}"
        )
    return source


class Settings(BaseSettings):
    """Everything that shapes one run. Children inherit their parent's settings."""

    model_config = SettingsConfigDict(
        env_prefix="RLM_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        # No use_attribute_docstrings: it walks the importing frames through
        # inspect.getmodule over every loaded module (~20-40 ms of each start); the
        # docstrings are read on demand by setting_descriptions().
    )

    model: str = Field(default="gpt-4o", validation_alias=AliasChoices("RLM_MODEL", "OPENAI_MODEL"))
    """Model name sent to the OpenAI-compatible endpoint; falls back to ``OPENAI_MODEL``."""

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RLM_API_KEY", "OPENAI_API_KEY")
    )
    """API key of the endpoint; falls back to ``OPENAI_API_KEY``. Never reaches a kernel."""

    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("RLM_BASE_URL", "OPENAI_BASE_URL")
    )
    """Base URL of the OpenAI-compatible endpoint (e.g. ``http://localhost:8000/v1``); falls
    back to ``OPENAI_BASE_URL``. Never reaches a kernel."""

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

    compact_at_tokens: int = Field(
        default=0,
        ge=0,
        validation_alias=AliasChoices("RLM_COMPACT_AT_TOKENS", "RLM_SUMMARIZE_AT_TOKENS"),
    )
    """Prompt tokens of a request past which the agent compacts its context: the model
    summarizes the older turns, which are dropped (0: never; the kernel is kept)."""

    max_compactions: int = Field(default=10, ge=0)
    """Automatic compactions one agent may make (threshold or context-length error; 0: none)."""

    kernel_start: Literal["fork", "cold"] = "fork" if sys.platform.startswith("linux") else "cold"
    """How sub-agent kernels start: fork (from a pre-imported zygote; Linux) or cold."""

    kernel_pool: int = Field(default=2, ge=0)
    """Kernels kept started ahead once a run spawns its first sub-agent (0: no pool)."""

    mcp_config: Path | None = None
    """JSON file of MCP servers (``{"mcpServers": {name: {command, args, env} | {url}}}``); each tool is an async function of every kernel: ``await name.tool(...)``."""

    mcp_timeout: float = Field(default=120.0, gt=0)
    """Seconds one MCP tool call may take to answer; then the cell gets an error."""

    mcp_start_timeout: float = Field(default=60.0, gt=0)
    """Seconds an MCP server may take to start and list its tools; then it is unavailable."""
    control_transport: Literal["auto", "ipc"] = "auto"
    """How cells reach the orchestrator (``rlm.run``, ``rlm.llm``...): auto uses the
    kernel's own channels where its ipykernel has subshells (7+), else the ipc socket."""

    kernel_gateway: Annotated[tuple[str, ...], NoDecode] = ()
    """Kernel gateway URLs, comma separated: every kernel of the run starts there, round-robin."""

    kernel_gateway_token: SecretStr | None = None
    """Token of the kernel gateways (sent as an ``Authorization`` header). Never reaches a kernel."""

    kernel_gateway_token_file: Path | None = None
    """File holding the kernel gateway token (used when the token itself is not set)."""

    kernel_spec: str | None = None
    """Kernelspec: the gateway's (with a gateway), else a local one, e.g. a gateway provisioner's."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags and keyword arguments, then the environment, then the project file, then
        the user file (earlier wins). The files are found at each load, so a changed working
        directory or ``XDG_CONFIG_HOME`` is honoured."""
        user, project = config_files()
        return (
            init_settings,
            env_settings,
            _toml_source(settings_cls, project),
            _toml_source(settings_cls, user),
        )

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or blank")
        return value

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

    @field_validator("kernel_gateway", mode="before")
    @classmethod
    def _split_gateways(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("kernel_gateway")
    @classmethod
    def _check_gateways(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
            if "@" in url.split("//", 1)[1].split("/", 1)[0]:
                raise ValueError("must not hold a user or password: set the gateway token")
        return value

    @field_validator("kernel_gateway_token_file")
    @classmethod
    def _check_token_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                value.expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ValueError(f"cannot read {str(value)!r}: {reason}") from None
        return value

    @field_validator("mcp_config")
    @classmethod
    def _check_mcp_config(cls, value: Path | None) -> Path | None:
        """Readable JSON here, so a bad file is named by the flag or variable it came from;
        the servers' shape is checked when the run starts them (rlm.runtime.mcp_config)."""
        if value is not None:
            try:
                json.loads(value.expanduser().read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ValueError(f"cannot read {str(value)!r}: {reason}") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"{str(value)!r} is not JSON: {exc}") from None
        return value

    @field_validator("kernel_spec")
    @classmethod
    def _check_kernel_spec(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A local kernelspec must be installed: else the run would call the model and only
        fail when its first cell needs the kernel. A gateway's are checked at its start."""
        if value is not None and not info.data.get("kernel_gateway"):
            # Where jupyter_client looks (jupyter_core's search path), without importing
            # jupyter_client here: `rlm sessions` loads these settings too.
            from jupyter_core.paths import jupyter_path

            name = value.lower()
            found = name == "python3" or any(
                (Path(folder) / name / "kernel.json").is_file()
                for folder in jupyter_path("kernels")
            )
            if not found:
                raise ValueError(f"no kernelspec named {value!r} is installed")
        return value

    @property
    def gateway_token(self) -> str | None:
        """The kernel gateway token as plain text: the setting, else the token file's."""
        if self.kernel_gateway_token is not None:
            return self.kernel_gateway_token.get_secret_value()
        if self.kernel_gateway_token_file is not None:
            path = self.kernel_gateway_token_file.expanduser()
            return path.read_text(encoding="utf-8").strip() or None
        return None

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


@functools.cache
def setting_descriptions() -> dict[str, str]:
    """Each setting's description: the docstring under its field in :class:`Settings`.

    Read from this module's source when asked (``rlm --help``, the configuration docs), not at
    class creation, so a run does not pay for it. Cleaned as pydantic cleans an attribute
    docstring (``inspect.cleandoc``).
    """
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    (body,) = [n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    found: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[node.target.id] = inspect.cleandoc(after.value.value)
    return found


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
        field = _ALIASES.get(field, field)
        # pydantic names an aliased field by its first alias: the variable set is the culprit
        # (RLM_* before OPENAI_*, as it is read)
        alias = next((a for a, f in _ALIASES.items() if f == field and a in os.environ), None)
        if field == "api_key":
            name = alias if alias is not None and field not in given else "api_key"
        elif field in given:
            name = flag_name(field)
        elif alias is not None:
            name = alias
        elif env_name(field) in os.environ or error["type"] == "extra_forbidden":
            name = env_name(field)
        else:
            name = _file_naming(field) or env_name(field)
        if error["type"] == "extra_forbidden":
            name = _file_naming(field) or field
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        secret = field in _SECRET_VALUES
        shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
        lines.append(f"{name}: {message}{shown}")
    return "; ".join(lines)


#: Environment names that set a field under another name (``OPENAI_*`` fallbacks, the
#: verifiers harness's ``RLM_SUMMARIZE_AT_TOKENS``): an error on one names the variable.
_ALIASES = {
    "RLM_API_KEY": "api_key",
    "OPENAI_API_KEY": "api_key",
    "RLM_MODEL": "model",
    "OPENAI_MODEL": "model",
    "RLM_BASE_URL": "base_url",
    "OPENAI_BASE_URL": "base_url",
    "RLM_COMPACT_AT_TOKENS": "compact_at_tokens",
    "RLM_SUMMARIZE_AT_TOKENS": "compact_at_tokens",
}


def _file_naming(field: str) -> str | None:
    """``path: field`` for the settings file with the highest precedence that sets
    ``field`` (so a bad value names where to fix it), or None."""
    for path in reversed(config_files()):
        try:
            if field in _toml_source(Settings, path).toml_data:
                return f"{path}: {field}"
        except ConfigError:
            continue
    return None


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
            shown = "" if name in _SECRET_VALUES else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}{shown}")
        raise ConfigError("; ".join(problems)) from None
