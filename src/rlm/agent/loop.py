"""One agent: a model, a kernel, tools and a live context, looping until an answer.

The agent is also a node of the session tree: it knows its parent, depth and session
folder, keeps its own and its subtree's token usage, and tracks the sub-agents started from
its current cell so they can be cancelled when the cell ends. Everything it needs from the
process around it goes through :class:`rlm.agent.host.AgentHost`; agents are built by the
constructors in :mod:`rlm.runtime.agents` (root, child, resumed).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rlm.agent import events as ev
from rlm.agent.context import LiveContext, parse_arguments, sanitize_tool_calls
from rlm.agent.host import AgentHost, KernelHandle
from rlm.agent.model import REQUEST_DEPTH, DeltaKind, ModelReply, Usage
from rlm.agent.overflow import compact
from rlm.agent.prompt import InputInfo, PromptParts, kernel_cwd, render_system_prompt
from rlm.agent.textcalls import find_text_calls
from rlm.agent.tools import ToolContext, ToolResult, enabled_tools
from rlm.config import Settings
from rlm.control.inputs import Packed, pack_inputs
from rlm.errors import AgentError, ContextOverflowError, ModelError, RLMError, ToolError
from rlm.logs.writer import SessionLog, clean_text
from rlm.schema import Status, StopReason
from rlm.truncation import truncate

__all__ = ["MAX_INLINE_TASK", "Agent", "ResumedState"]

#: Longer user messages go to a kernel variable instead of the prompt (see ``send``); with
#: ``RLM_CONTEXT_WINDOW`` set, the threshold is that many characters (a quarter of the window,
#: at ~4 characters a token) when it is lower.
MAX_INLINE_TASK = 50_000
#: Characters of an unknown, model-chosen tool name quoted back (and so logged and shown).
MAX_TOOL_NAME_SHOWN = 1_000
#: Replies cut by the endpoint's token limit that are continued before the agent gives up.
MAX_CONTINUATIONS = 3
_TASK_PREVIEW = 2_000
_RESUMED_NOTE = (
    "[This session was resumed in a new kernel: variables, imports and definitions from "
    "earlier turns are gone; files on disk remain.]\n\n"
)
_EMPTY_REPLY_NUDGE = (
    "Your last reply had neither text nor a tool call. Call a tool, or reply with your final "
    "answer as plain text."
)
_CONTINUE_NUDGE = (
    "Your reply was cut off by the endpoint's token limit. Continue exactly where it stopped, "
    "without repeating what you already wrote."
)
_TEXT_CALLS_WARNING = (
    "the model server returned tool calls as text, not as structured tool_calls; rlm runs "
    "them, but the server should parse them (llama-server: --jinja with a chat template that "
    "has tools; vLLM: --enable-auto-tool-choice --tool-call-parser NAME; Ollama: a model "
    "with a tools template)"
)
_NO_USAGE_WARNING = (
    "the model server reports no token usage, so the token budget (RLM_MAX_TOKENS) cannot apply"
)
_CUT_CALL = (
    "Error: this tool call was cut off by the endpoint's token limit before its arguments were "
    "complete, so it was not run. Send a shorter call, or split the work into several calls."
)


@dataclass
class ResumedState:
    """What an agent resumed from its log starts with (see ``rlm.runtime.agents``)."""

    context: LiveContext
    children: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    usage_total: Usage = field(default_factory=Usage)


class Agent:
    def __init__(
        self,
        host: AgentHost,
        settings: Settings,
        task: str,
        *,
        log: SessionLog,
        agent_id: str,
        parent: Agent | None = None,
        inputs: Packed | None = None,
        context: list[dict[str, Any]] | None = None,
        resumed: ResumedState | None = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.task = task
        self.log = log
        self.id = agent_id
        self.parent = parent
        self.depth: int = parent.depth + 1 if parent else 0
        self.inputs: Packed = inputs or ([], [])
        self.prior_context = context or []
        self.tools = enabled_tools(settings)
        self.kernel: KernelHandle | None = None
        #: A kernel start still running beside the first model request (see ``open``).
        self._kernel_start: asyncio.Task[None] | None = None
        #: Set when the agent waits for that start: the host may hold it back until the first
        #: model request is on the wire, but not past this.
        self._kernel_needed = asyncio.Event()
        self.context = (
            resumed.context if resumed else LiveContext([], settings.max_turns_in_context)
        )
        self.resumed = resumed is not None
        self.usage = resumed.usage if resumed else Usage()
        self.usage_total = resumed.usage_total if resumed else Usage()
        self.children: list[dict[str, Any]] = list(resumed.children) if resumed else []
        self.cell_children: set[asyncio.Task[Any]] = set()
        self.skills_prompt = ""
        self.answer: str | None = None
        self.last_status: tuple[Status, StopReason, str | None] = (
            Status.DONE,
            StopReason.CLOSED,
            None,
        )
        self._started = time.monotonic()
        #: Sees each event before the host does (the runtime's metrics, ``rlm.runtime.metrics``).
        self.observe: Callable[[ev.Event], None] | None = None
        #: Automatic compactions tried (``RLM_MAX_COMPACTIONS``), and the prompt tokens of
        #: the last request, checked against ``RLM_COMPACT_AT_TOKENS``.
        self.compaction_attempts = 0
        self._last_prompt_tokens = 0
        #: Warnings already given (``warn_once``); only the root's set is used.
        self._warned: set[str] = set()
        self._tool_ctx = ToolContext(settings=settings, cwd=host.cwd, agent=self)

    # -- tree bookkeeping ------------------------------------------------------------------

    def emit(self, event_type: type[ev.Event], **fields: Any) -> None:
        event = event_type(agent_id=self.id, depth=self.depth, **fields)
        if self.observe is not None:
            self.observe(event)
        self.host.emit(event)

    def log_event(self, kind: str, /, **fields: Any) -> None:
        self.log.event(kind, **fields)

    def warn_once(self, key: str, message: str) -> None:
        """Tell the user ``message`` once per run (the whole tree), in the log and as an event."""
        root = self
        while root.parent is not None:
            root = root.parent
        if key in root._warned:
            return
        root._warned.add(key)
        self.log.event("warning", message=message)
        self.emit(ev.EndpointWarning, message=message)

    def _model_retry(self, attempt: int, attempts: int, wait: float, reason: str) -> None:
        self.log.event("model_retry", attempt=attempt, attempts=attempts, wait=wait, reason=reason)
        self.emit(ev.ModelRetry, attempt=attempt, attempts=attempts, wait=wait, reason=reason)

    def _model_delta(self, turn: int, part: DeltaKind, text: str) -> None:
        self.emit(ev.ModelDelta, turn=turn, part=part, text=text)

    def add_usage(self, usage: Usage, model: str | None = None) -> float:
        """Count one model call (``model``: the one it used, default this agent's) in this
        agent's usage and cost, and in the totals of every agent above it. The host prices it
        and counts it against the run's cost budget; returns its dollars."""
        cost = self.host.charge(model or self.settings.model, usage)
        self.usage = self.usage + usage
        self.log.update(cost=self.log.meta.cost + cost)
        node: Agent | None = self
        while node is not None:
            node.usage_total = node.usage_total + usage
            node.log.update(
                usage=node.usage.as_dict(),
                usage_total=node.usage_total.as_dict(),
                cost_total=node.log.meta.cost_total + cost,
            )
            node = node.parent
        return cost

    def child_changed(self, entry: dict[str, Any]) -> None:
        """A child started or ended: keep the ``children`` list of meta.json current."""
        if entry not in self.children:
            self.children.append(entry)
        self.log.update(children=self.children)

    @property
    def running_cell(self) -> str | None:
        """The id of the cell running in this agent's kernel, if any."""
        return self.kernel.running_cell if self.kernel is not None else None

    def adopt_cell_child(self, task: asyncio.Task[Any]) -> None:
        """A sub-agent request of the running cell: cancelled when that cell ends."""
        self.cell_children.add(task)

    async def cell_finished(self) -> None:
        """Cancel sub-agents the cell left running and wait until they are gone."""
        tasks = [t for t in self.cell_children if not t.done()]
        self.cell_children.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def kernel_restarted(self, reason: str) -> None:
        """The kernel lost every variable: say so, and load the inputs again (they are the
        agent's data, not state the model built)."""
        self.log.event("kernel_restarted", reason=reason)
        self.emit(ev.KernelRestarted, reason=reason)
        if self.kernel is not None and self.inputs[0]:
            await self.kernel.execute("await rlm.inkernel.load_inputs()", 60)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> str:
        """Run the task to an answer; raises ``AgentError`` on failure; cancellation passes."""
        try:
            await self.open()
            answer = await self.send(self.task)
        except BaseException as exc:
            await self.close(exc)
            raise
        await self.close()
        return answer

    async def open(self) -> None:
        """Start the kernel and write the head of the conversation (system prompt, context).

        The kernel starts in the background when the system prompt does not depend on it (no
        skills to report, no inputs to describe as loaded): the first model request then
        overlaps the kernel start instead of waiting for it, and the first tool call waits.
        """
        self.emit(
            ev.AgentStarted,
            parent_id=self.parent.id if self.parent else None,
            session_path=str(self.log.path),
            task=self.task,
        )
        try:
            wants_kernel = "ipython" in self.settings.tools or _files_follow_kernel(self.settings)
            if (
                self.inputs[0]
                or (self.host.has_skills and "ipython" in self.settings.tools)
                or (wants_kernel and _remote_kernel(self.settings))  # the prompt says its cwd
            ):
                await self.start_kernel()
            elif wants_kernel:
                self._kernel_start = asyncio.ensure_future(
                    self.start_kernel(needed=self._kernel_needed)
                )
            if self.context.head:  # resumed: the head was rebuilt from the log
                return
            remote_cwd = None
            if self.kernel is not None and getattr(self.kernel, "remote", False):
                remote_cwd = kernel_cwd(getattr(self.kernel, "bootstrap_values", {}))
            parts = PromptParts(
                cwd=remote_cwd or self.host.cwd,
                depth=self.depth,
                skills=self.skills_prompt,
                inputs=[InputInfo(**info) for info in self.inputs[0]],
            )
            system = {"role": "system", "content": render_system_prompt(self.settings, parts)}
            self.context.head.append(system)
            self.log.append(system)
            for message in self.prior_context:
                self.context.head.append(message)
                self.log.append({**message, "kind": "context"})
        except BaseException as exc:
            raise self._as_agent_error(exc) from None

    async def start_kernel(self, *, needed: asyncio.Event | None = None) -> None:
        """``needed``: started beside the first model request, which may go first until this
        event is set (see ``AgentHost.start_kernel``)."""
        self.kernel = await self.host.start_kernel(self, needed=needed)
        self._tool_ctx.kernel = self.kernel
        self.skills_prompt, failed = self.host.skills_report(self.kernel)
        for name, error in failed.items():
            self.log.event("skill_failed", name=name, error=error)
        if self.inputs[0]:
            await self.kernel.execute("await rlm.inkernel.load_inputs()", 60)

    async def kernel_ready(self) -> None:
        """Wait for a kernel start begun by ``open``; its failure is raised here, once.
        Cancelling the wait (a cancelled turn) leaves the start running for the next turn."""
        task = self._kernel_start
        if task is None:
            return
        self._kernel_needed.set()
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._kernel_start = None

    async def send(self, text: str) -> str:
        """One user message to an answer. Cancelling it rolls the live context back to where
        it was before the message, so no tool call is left without its result."""
        snapshot = self.context.snapshot()
        logged = self.log.lines
        text = clean_text(text)
        if len(text) > self.inline_limit:
            try:
                await self.kernel_ready()
                if self.kernel is not None:
                    text = await self._task_to_variable(text)
            except BaseException as exc:
                raise self._as_agent_error(exc) from None
        resumed, self.resumed = self.resumed, False
        if resumed:
            text = _RESUMED_NOTE + text
        user = {"role": "user", "content": text}
        if not self.log.meta.task:
            self.log.update(task=text[: self.inline_limit])
        self.context.add_user(user)
        self.log.append(user)
        try:
            answer = await self._loop(first_turn=self.context.turn_count)
            self.last_status = (Status.DONE, StopReason.ANSWER, None)
        except asyncio.CancelledError:
            self.context.restore(snapshot)
            self.log.event("turn_cancelled", discard_lines=self.log.lines - logged)
            self.last_status = (Status.CANCELLED, StopReason.CANCELLED, "cancelled")
            await asyncio.shield(self._settle_after_cancel())
            raise
        except BaseException as exc:
            error = self._as_agent_error(exc)
            if isinstance(error, AgentError) and error.reason == StopReason.MODEL_ERROR:
                # The endpoint refused the conversation (context full, a 4xx, an outage):
                # without this the failed message stays and every later one fails too.
                self.context.restore(snapshot)
                self.resumed = resumed
                self.log.event("turn_failed", discard_lines=self.log.lines - logged)
            if isinstance(error, AgentError):
                self.last_status = (Status.ERROR, _stop_reason(error.reason), error.message)
            raise error from None
        finally:
            self.log.flush()  # a turn's end is where readers look: no lag there
            self.emit(ev.TurnFinished, status=self.last_status[0])
        self.answer = answer
        return answer

    @property
    def inline_limit(self) -> int:
        """Characters of a user message sent inline; longer ones go to a kernel variable."""
        window = self.settings.context_window
        return min(MAX_INLINE_TASK, window) if window else MAX_INLINE_TASK

    async def _task_to_variable(self, text: str) -> str:
        """An enormous message lives in the kernel, not in the prompt (the idea of recursive
        language models): the model gets its beginning and the name of the variable."""
        assert self.kernel is not None
        name = "task" if self.context.turn_count == 0 else f"message_{self.context.turn_count}"
        infos, blobs = await asyncio.to_thread(pack_inputs, {name: text})
        self.inputs = ([*self.inputs[0], *infos], [*self.inputs[1], *blobs])
        await self.kernel.execute(f"await rlm.inkernel.load_inputs([{name!r}])", 60)
        await asyncio.to_thread((self.log.path / f"{name}.txt").write_text, text, encoding="utf-8")
        return (
            text[:_TASK_PREVIEW]
            + f"\n\n[This message is {len(text):,} characters long. Only its beginning is shown; "
            f"the whole text is in the variable `{name}` of your ipython kernel.]"
        )

    async def _settle_after_cancel(self) -> None:
        await self.cell_finished()
        if self.kernel is not None:
            await self.kernel.settle()

    def _as_agent_error(self, exc: BaseException) -> BaseException:
        """Map what ended a turn to the ``AgentError`` the caller sees (cancellation passes)."""
        path = str(self.log.path)
        if isinstance(exc, asyncio.CancelledError):
            return exc
        if isinstance(exc, AgentError):
            exc.session_path = path
            return exc
        if isinstance(exc, ModelError):
            return AgentError(str(exc), reason=StopReason.MODEL_ERROR, session_path=path)
        if isinstance(exc, RLMError):
            return AgentError(str(exc), reason=StopReason.KERNEL_ERROR, session_path=path)
        if isinstance(exc, Exception):
            error = f"{type(exc).__name__}: {exc}"
            self.log.event("crash", error=error)
            return AgentError(error, reason=StopReason.CRASH, session_path=path)
        return exc

    async def close(self, exc: BaseException | None = None) -> None:
        """Shut the kernel down and write the final meta; safe to call once per agent."""
        if isinstance(exc, AgentError):
            self.last_status = (Status.ERROR, _stop_reason(exc.reason), exc.message)
        elif exc is not None:  # cancelled, interrupted
            self.last_status = (Status.CANCELLED, StopReason.CANCELLED, "cancelled")
        status, reason, error = self.last_status
        await asyncio.shield(self._cleanup())
        finished = ev.AgentFinished(
            agent_id=self.id,
            depth=self.depth,
            status=status.value,
            stop_reason=reason.value,
            turns=self.context.turn_count,
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            elapsed=time.monotonic() - self._started,
        )
        if self.observe is not None:  # counted before the final meta.json is written
            self.observe(finished)
        self.log.close(
            status=status.value,
            stop_reason=reason.value,
            answer=self.answer,
            error=error,
            turns=self.context.turn_count,
        )
        self.host.emit(finished)

    async def _cleanup(self) -> None:
        await self.cell_finished()
        await self.host.agent_ending(self)
        task, self._kernel_start = self._kernel_start, None
        if task is not None:  # never needed: the agent ended before its first tool call
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.kernel is not None:
            await self.kernel.shutdown()
        self.host.forget(self)

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self, first_turn: int) -> str:
        schemas = [tool.schema(self.settings) for tool in self.tools.values()]
        REQUEST_DEPTH.set(self.depth)  # the X-RLM-Depth of this agent's requests
        partial: list[str] = []  # pieces of an answer the endpoint cut at its token limit
        while True:
            if self.context.turn_count - first_turn >= self.settings.max_turns:
                raise AgentError(
                    f"stopped after {self.settings.max_turns} "
                    f"turn{'' if self.settings.max_turns == 1 else 's'} without a final answer "
                    "(RLM_MAX_TURNS)",
                    reason=StopReason.MAX_TURNS,
                )
            turn = self.context.turn_count + 1
            threshold = self.settings.compact_at_tokens
            if threshold and self._last_prompt_tokens >= threshold:
                self._last_prompt_tokens = 0
                await compact(self, "compact_at_tokens")
            messages = self.context.messages()
            self.emit(ev.ModelRequest, turn=turn, messages=len(messages))
            try:
                reply = await self.host.complete(
                    messages,
                    schemas,
                    self.settings.model,
                    on_retry=self._model_retry,
                    on_delta=functools.partial(self._model_delta, turn),
                )
            except ContextOverflowError:
                # compact and send the request again; compaction leaves one turn in
                # context, so a second refusal cannot compact again and ends the turn
                if not await compact(self, "context_length"):
                    raise
                continue
            self._last_prompt_tokens = reply.usage.prompt_tokens or 0
            message, written = self._structured(reply.message)
            calls = message.get("tool_calls") or []
            cut = reply.finish_reason == "length" and written is None
            self._record_reply(turn, reply, message, written)
            dropped = self.context.add_assistant(sanitize_tool_calls(message) if calls else message)
            if dropped:
                self.log.event(
                    "context_window", dropped_turns=dropped, kept=len(self.context.turns)
                )
            raw = message.get("content") or ""
            content = raw.strip()
            if not calls and content and not cut:
                return ("".join(partial) + raw).strip() if partial else content
            budget = self.settings.max_tokens
            if budget and (self.usage.completion_tokens or 0) >= budget:
                raise AgentError(
                    f"completion-token budget of {budget} spent (RLM_MAX_TOKENS)",
                    reason=StopReason.TOKEN_BUDGET,
                )
            if cut and not calls:
                partial.append(raw)
                if len(partial) > MAX_CONTINUATIONS:
                    raise AgentError(
                        f"the endpoint cut {len(partial)} replies in a row at its token limit "
                        "(finish_reason: length); raise the server's limit or "
                        "RLM_MAX_COMPLETION_TOKENS",
                        reason=StopReason.LENGTH,
                    )
                self._nudge(_CONTINUE_NUDGE)
                continue
            partial.clear()
            if not calls:
                self._nudge(_EMPTY_REPLY_NUDGE)
                continue
            await self.kernel_ready()
            for call in calls:
                result, log_extra = (_CUT_CALL, {}) if cut else await self._call_tool(turn, call)
                tool_message = {"role": "tool", "tool_call_id": call["id"], "content": result}
                self.context.add(tool_message)
                self.log.append({**tool_message, **log_extra})

    def _structured(self, message: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The reply with tool calls written as text turned into structured ones (see
        :mod:`rlm.agent.textcalls`), and the text they were written in (None: none were)."""
        if message.get("tool_calls") or not self.tools:
            return message, None
        written = message.get("content") or ""
        found = find_text_calls(written, set(self.tools))
        if found is None:
            return message, None
        self.warn_once("text_tool_calls", _TEXT_CALLS_WARNING)
        return {**message, "content": found.content, "tool_calls": found.calls}, written

    def _record_reply(
        self, turn: int, reply: ModelReply, message: dict[str, Any], written: str | None
    ) -> None:
        """Log the reply as the endpoint sent it (raw arguments and text included), count it."""
        record: dict[str, Any] = {**message, "usage": reply.usage.as_dict()}
        # what the endpoint said about the reply, for debugging and training data
        extras = {
            "finish_reason": reply.finish_reason,
            "served_model": reply.model,
            "response_id": reply.id,
            "notes": reply.notes or None,
            "text_tool_calls": written,  # the content the calls were parsed from
        }
        record.update({key: value for key, value in extras.items() if value is not None})
        self.log.append(record)
        self.log.meta.turns = turn
        cost = self.add_usage(reply.usage)
        if self.settings.max_tokens and reply.usage.completion_tokens is None:
            self.warn_once("no_usage", _NO_USAGE_WARNING)
        calls = len(message.get("tool_calls") or [])
        self.emit(
            ev.ModelResponse,
            turn=turn,
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            latency=reply.latency,
            tool_calls=calls,
            content=message.get("content") or "",
            cost=cost,
        )

    def _count_run(self, name: str, args: Any, log_extra: dict[str, Any]) -> None:
        """Metrics of a tool that ran: its cell, or the summary it kept."""
        metrics = self.log.meta.metrics
        if name == "ipython":
            metrics.count_cell(getattr(args, "code", ""), failed=_cell_failed(log_extra))
        elif name == "summarize":
            metrics.summaries += 1

    def _nudge(self, text: str) -> None:
        nudge = {"role": "user", "content": text}
        self.context.add(nudge)
        self.log.append({**nudge, "kind": "nudge"})

    async def _call_tool(self, turn: int, call: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The tool's text for the model, and the extra keys of its log line."""
        name = call["function"]["name"]
        raw = call["function"].get("arguments") or "{}"
        started = time.monotonic()
        call_id = str(call.get("id") or "")
        self.emit(
            ev.ToolStarted,
            turn=turn,
            name=name,
            preview=_preview_args(raw),
            call_id=call_id,
            arguments=raw,
        )
        error = True
        log_extra: dict[str, Any] = {}
        tool = self.tools.get(name)
        try:
            if tool is None:
                cut = MAX_TOOL_NAME_SHOWN
                shown = name if len(name) <= cut else f"{name[:cut]}… ({len(name):,} characters)"
                raise ToolError(
                    f"unknown tool {shown!r}; available: {', '.join(self.tools) or 'none'}"
                )
            try:
                arguments = parse_arguments(raw)
            except json.JSONDecodeError as exc:
                raise ToolError(f"the arguments are not valid JSON ({exc})") from None
            try:
                args = tool.Args.model_validate(arguments)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ToolError(f"invalid arguments for {name}: {problems}") from None
            result = await tool.run(args, self._tool_ctx)
            text, log_extra = (
                (result.text, result.log) if isinstance(result, ToolResult) else (result, {})
            )
            error = False
            self._count_run(name, args, log_extra)
        except ToolError as exc:
            text = f"Error: {exc}"
        self.log.meta.metrics.count_tool(name, error=error)
        if tool is None or not tool.caps_own_output:
            text = truncate(text, self.settings.max_output)
        if self.context.max_turns > 0:
            text += "\n" + self.context.status()
        self.emit(
            ev.ToolFinished,
            turn=turn,
            name=name,
            duration=time.monotonic() - started,
            preview=text[:200],
            error=error,
            call_id=call_id,
            output=text,
        )
        return text, log_extra


def _cell_failed(log_extra: dict[str, Any]) -> bool:
    """Whether a cell's logged outputs hold an error (a traceback, or rlm's note of a
    timeout or a dead kernel)."""
    for output in log_extra.get("outputs") or []:
        if isinstance(output, dict) and output.get("msg_type") == "error":
            return True
    return False


def _stop_reason(value: str) -> StopReason:
    try:
        return StopReason(value)
    except ValueError:
        return StopReason.ERROR


def _preview_args(raw: str) -> str:
    try:
        args = parse_arguments(raw)
    except json.JSONDecodeError:
        return raw[:80]
    if isinstance(args, dict):
        for key in ("code", "command", "path", "summary"):
            if isinstance(args.get(key), str):
                lines = args[key].strip().splitlines()
                return lines[0][:80] if lines else ""
    return raw[:80]


def _remote_kernel(settings: Settings) -> bool:
    """Whether kernels may run on another machine (a gateway, an installed kernelspec's
    provisioner), whose working directory the prompt must state, not the orchestrator's."""
    return bool(settings.kernel_gateway or settings.kernel_spec)


def _files_follow_kernel(settings: Settings) -> bool:
    """With a remote kernel (``RLM_KERNEL_GATEWAY``) ``bash`` and ``edit`` run through it,
    so it starts even without the ipython tool."""
    return bool(settings.kernel_gateway) and not {"bash", "edit"}.isdisjoint(settings.tools)
