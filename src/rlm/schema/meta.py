"""The schema of an agent's ``meta.json``: one model the writers fill and the readers read.

``meta.json`` outlives the rlm that wrote it: sessions are listed, shown, exported and
resumed by later versions, and hand-edited or cut short by kills. So reading is lenient and
writing is strict. :meth:`AgentMeta.read` accepts any JSON value: a key it does not know is
kept (``extra="allow"``, written back unchanged), a missing key takes its default, and a
value of the wrong type is dropped to its default instead of failing the whole file (one
bad counter must not hide a session). Assigning a field (what the writer does) validates it.

Keys, in the order they are written::

    status       running | done | error | cancelled          (Status)
    started_at   ISO time the agent started (UTC, microseconds)
    id           <session-id>, or <session-id>/sub-../sub-.. for a sub-agent
    parent       the parent agent's id (null for the root)
    depth        0 for the root, 1 for its children, ...
    model        the model name the agent used
    task         the first user message (its first 50,000 characters)
    cwd          the working directory of the run
    pid          the orchestrator's process id (a dead pid with status running: interrupted)
    answer       the final answer, or null
    turns        model turns so far
    stop_reason  why the agent (or its last turn) ended, or null          (StopReason)
    usage        {prompt_tokens, completion_tokens} of this agent's own model calls
    usage_total  the same for this agent and every agent below it
    children     [{id, task, status}] of its sub-agents, in start order
    llm_calls    rlm.llm calls this agent's cells made (each a line of llm_calls.jsonl)
    llm_usage    {prompt_tokens, completion_tokens} of those calls (also counted in usage)
    cost         dollars of this agent's own usage (RLM_PRICES; 0 for an unpriced model)
    cost_total   the same for this agent and every agent below it
    metrics      flat numbers for trainers and evals (:class:`Metrics`; docs/sessions.md)
    settings     the agent's settings (without api_key, base_url, home)
    kernel       where its kernel ran: {gateway, kernel_id} on a kernel gateway, null locally
    error        why it ended without an answer, or null
    ended_at     ISO time it ended, or null while it runs
    resumed_at   ISO time it was last resumed, or null
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)

from rlm.safeio import read_regular
from rlm.schema import Status, StopReason

__all__ = [
    "MAX_META_BYTES",
    "METRIC_TOOLS",
    "AgentMeta",
    "ChildEntry",
    "MetaError",
    "Metrics",
    "Usage",
    "parse_time",
]

#: Largest ``meta.json`` read (a real one is a few KiB; a planted one must not fill memory).
MAX_META_BYTES = 16 << 20


class MetaError(ValueError):
    """``meta.json`` could not be read at all (missing, not JSON, not an object)."""


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp of the log as an aware datetime (``None`` when absent or bad)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class _Lenient(BaseModel):
    """Reading drops what does not validate, key by key, to its default.

    Validation of a whole object (``model_validate``) retries without the keys that failed;
    assignment to one field (``validate_assignment``) stays strict, so a writer's mistake is
    raised where it happens."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_bad_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if isinstance(data, cls):  # an assignment: strict
            return handler(data)
        if not isinstance(data, dict):
            data = {}
        try:
            return handler(data)
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            if not bad:
                raise
            return handler({key: value for key, value in data.items() if key not in bad})

    def to_json(self) -> dict[str, Any]:
        """The JSON object as written: every key, statuses as their text."""
        return self.model_dump(mode="json")


class Usage(_Lenient):
    """Token counts of ``usage`` / ``usage_total``. Unknown keys (another version's
    counters) are ignored, and a count that is not a non-negative integer reads as 0."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @field_validator("prompt_tokens", "completion_tokens", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        if isinstance(value, bool):
            return 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return value if isinstance(value, int) and value >= 0 else 0

    def pair(self) -> tuple[int, int]:
        """``(prompt_tokens, completion_tokens)``."""
        return (self.prompt_tokens, self.completion_tokens)


class ChildEntry(_Lenient):
    """One sub-agent in its parent's ``children`` list."""

    id: str = ""
    """The sub-agent's folder name (``sub-1a2b3c``); older logs may hold its full id."""
    task: str = ""
    """Its task, cut to 200 characters."""
    status: Status | str = Field(Status.RUNNING, union_mode="left_to_right")
    """Its status as last seen by the parent (a child of ``rlm.spawn`` also reads ``busy``
    during a turn and ``idle`` between turns)."""

    @property
    def name(self) -> str:
        """The folder name, whichever form ``id`` has."""
        return self.id.rsplit("/", 1)[-1]


#: The tools with their own ``tool_calls_<name>`` counter (rlm's built-in tools).
METRIC_TOOLS = ("ipython", "summarize", "bash", "edit")


class Metrics(_Lenient):
    """``metrics`` of ``meta.json``: flat numbers a trainer reads as they are.

    An RL harness (PrimeIntellect's ``verifiers`` reads ``.rlm/sessions/*/meta.json``, key
    ``metrics``, and prefixes each key with ``rlm_``) takes every number here as a metric, so
    the keys are flat, unprefixed, always present and stable; a new one may be added, none is
    renamed. Counts are of this agent's own actions unless named ``tree_`` or ``sub_agents``
    (this agent and everything below it). Reading is lenient: a value that is not a
    non-negative number reads as 0."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    turns: int = 0
    """Model turns (assistant replies)."""
    tool_calls: int = 0
    """Tool calls the model made, any tool (an unknown tool name included)."""
    tool_errors: int = 0
    """Tool calls that returned an error (bad arguments, unknown tool, a tool's own error)."""
    tool_calls_ipython: int = 0
    tool_calls_summarize: int = 0
    tool_calls_bash: int = 0
    tool_calls_edit: int = 0
    ipython_cells: int = 0
    """Cells run in the kernel (ipython calls whose arguments were valid)."""
    ipython_cell_errors: int = 0
    """Cells whose output holds an error (an exception, or the interrupt of a timed-out cell)."""
    ipython_input_chars: int = 0
    """Characters of code sent in cells, all together."""
    mean_cell_chars: float = 0.0
    """``ipython_input_chars / ipython_cells`` (0 without cells)."""
    sub_agents: int = 0
    """Agents started below this one (``rlm.run`` and ``rlm.spawn``, at any depth)."""
    sub_agents_any: int = 0
    """1 when ``sub_agents`` > 0, else 0."""
    llm_calls: int = 0
    """``rlm.llm`` / ``rlm.llm_batch`` model calls this agent's cells made."""
    host_function_calls: int = 0
    """Host-function calls this agent's cells made."""
    summaries: int = 0
    """``summarize`` calls of the model that dropped turns."""
    compactions: int = 0
    """Automatic compactions (``RLM_COMPACT_AT_TOKENS``, or a context-length error)."""
    kernel_restarts: int = 0
    """Kernel restarts (``flush_repl_state``, a kernel that died or was restarted)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    """Prompt plus completion tokens of this agent's own model calls (``rlm.llm`` included)."""
    tree_prompt_tokens: int = 0
    tree_completion_tokens: int = 0
    tree_tokens: int = 0
    """The same for this agent and every agent below it."""
    cost: float = 0.0
    tree_cost: float = 0.0
    """Dollars of ``tokens`` / ``tree_tokens`` (``RLM_PRICES``; 0 for an unpriced model)."""
    wall_time: float = 0.0
    """Seconds the agent ran (summed over resumes)."""

    @field_validator("*", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return 0
        return max(value, 0)

    def count_tool(self, name: str, *, error: bool) -> None:
        """One tool call of the model."""
        self.tool_calls += 1
        self.tool_errors += int(error)
        if name in METRIC_TOOLS:
            key = f"tool_calls_{name}"
            setattr(self, key, getattr(self, key) + 1)

    def count_cell(self, code: str, *, failed: bool) -> None:
        """One cell run in the kernel."""
        self.ipython_cells += 1
        self.ipython_cell_errors += int(failed)
        self.ipython_input_chars += len(code)
        self.mean_cell_chars = round(self.ipython_input_chars / self.ipython_cells, 1)


class AgentMeta(_Lenient):
    """The content of one agent's ``meta.json`` (see the module docstring for the keys)."""

    status: Status | str | None = Field(None, union_mode="left_to_right")
    """A :class:`Status`; an unknown value from another version is kept as text."""
    started_at: str | None = None
    id: str = ""
    parent: str | None = None
    depth: int = 0
    model: str = ""
    task: str = ""
    cwd: str | None = None
    pid: int | None = None
    answer: str | None = None
    turns: int = 0
    stop_reason: StopReason | str | None = Field(None, union_mode="left_to_right")
    """A :class:`StopReason`; an unknown value from another version is kept as text."""
    usage: Usage = Field(default_factory=Usage)
    usage_total: Usage = Field(default_factory=Usage)
    children: list[ChildEntry] = Field(default_factory=list)
    llm_calls: int = 0
    llm_usage: Usage = Field(default_factory=Usage)
    cost: float = 0.0
    cost_total: float = 0.0
    metrics: Metrics = Field(default_factory=Metrics)
    settings: dict[str, Any] = Field(default_factory=dict)
    kernel: dict[str, Any] | None = None
    error: str | None = None
    ended_at: str | None = None
    resumed_at: str | None = None

    @field_validator("children", mode="before")
    @classmethod
    def _entries_only(cls, value: Any) -> Any:
        """Keep the readable entries of a list (a stray value must not drop its siblings)."""
        if isinstance(value, list):
            return [entry for entry in value if isinstance(entry, (dict, ChildEntry))]
        return value

    @field_validator("pid", mode="before")
    @classmethod
    def _no_bool_pid(cls, value: Any) -> Any:
        return None if isinstance(value, bool) else value

    @property
    def started(self) -> datetime | None:
        return parse_time(self.started_at)

    @property
    def ended(self) -> datetime | None:
        return parse_time(self.ended_at)

    @property
    def resumed(self) -> datetime | None:
        return parse_time(self.resumed_at)

    @classmethod
    def read(cls, path: Path) -> AgentMeta:
        """The meta of an agent folder (or of a ``meta.json`` path); raises
        :class:`MetaError` when the file is missing, not a regular file (a FIFO, a device, a
        symlink: never followed nor blocked on), over ``MAX_META_BYTES``, not JSON or not a
        JSON object."""
        file = path / "meta.json" if path.is_dir() else path
        try:
            data = json.loads(read_regular(file, MAX_META_BYTES).decode("utf-8"))
        except OSError as exc:
            raise MetaError(f"cannot read {file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise MetaError(f"{file} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise MetaError(f"{file} is not a JSON object")
        return cls.model_validate(data)
