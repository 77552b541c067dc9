"""The orchestrator: the one process that owns every agent of a run.

It holds the model client (and so the API key), the private run directory, the control
channel, the session tree and the concurrency slots. Kernels only run code; when a cell
calls ``rlm.run`` the request arrives here, is checked against the calling agent's depth and
settings, and becomes a child agent run as an asyncio task.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from rlm.agent import events as ev
from rlm.agent.context import rebuild_context
from rlm.agent.loop import MAX_INLINE_TASK, Agent
from rlm.agent.model import ModelClient, Usage
from rlm.config import Settings, load_settings
from rlm.control.channel import ControlServer, Request
from rlm.errors import AgentError, ConfigError, DepthLimitError, RLMError
from rlm.inkernel import pack_inputs
from rlm.kernels.environment import kernel_environment
from rlm.kernels.kernel import MEMORY_CEILING, Kernel
from rlm.kernels.launcher import KernelLauncher
from rlm.logs.writer import SessionLog, clean_text, new_session_id
from rlm.schema.control import InputsReply, InputsRequest, RunRequest, encode_error
from rlm.schema.meta import AgentMeta
from rlm.skills import discovery as skills

__all__ = ["Orchestrator"]

_BOOTSTRAP = "import asyncio\nimport rlm\nimport rlm.inkernel\nrlm.inkernel.setup()\n"


def kernel_output_limit(max_output: int) -> int:
    """Characters one cell may send over IOPub: enough for the collector to apply
    ``RLM_MAX_OUTPUT`` exactly, small enough to keep the orchestrator's memory bounded."""
    return max(2 * max_output, MEMORY_CEILING) if max_output > 0 else MEMORY_CEILING


class Orchestrator:
    """Async context manager: ``async with Orchestrator(settings) as o: await o.run(task)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        cwd: Path | None = None,
        on_event: ev.EventCallback | None = None,
    ) -> None:
        self.settings = settings
        try:
            self.cwd = (cwd or Path.cwd()).resolve()
        except FileNotFoundError:
            raise ConfigError("the working directory no longer exists; cd somewhere") from None
        self.on_event = on_event
        self.skills: list[skills.SkillInfo] = []
        self._bootstrap = _BOOTSTRAP
        self.agents: dict[str, Agent] = {}
        self._kernel_numbers = itertools.count(1)
        self._slots: defaultdict[int, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.settings.max_concurrency)
        )
        self._base_env = kernel_environment()
        self.run_dir: Path | None = None
        self.model: ModelClient
        self.control: ControlServer

    async def __aenter__(self) -> Orchestrator:
        self.skills = skills.discover()
        names = [skill.name for skill in self.skills]
        self._bootstrap = _BOOTSTRAP + (skills.kernel_bootstrap_source(names) if names else "")
        self.run_dir = Path(tempfile.mkdtemp(prefix="rlm-"))  # mkdtemp makes it 0700
        self.model = ModelClient(self.settings)
        self.control = ControlServer(self.run_dir, self._handle)
        await self.control.start()
        self.launcher = KernelLauncher(
            self.run_dir,
            cwd=self.cwd,
            env=self._base_env,
            mode=self.settings.kernel_start,
            pool_size=self.settings.kernel_pool,
        )
        if self.settings.max_depth > 0:
            await self.launcher.start_zygote()  # imports in the background while the root starts
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.launcher.close()
        await self.control.close()
        await self.model.close()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def emit(self, event: ev.Event) -> None:
        ev.emit_safely(self.on_event, event)

    # -- agents ----------------------------------------------------------------------------

    def sessions_dir(self, settings: Settings) -> Path:
        path = settings.home.expanduser() / "sessions"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"RLM_HOME: cannot create {path}: {exc.strerror or exc}") from None
        return path

    def new_root(
        self,
        task: str,
        *,
        settings: Settings | None = None,
        inputs: dict[str, Any] | None = None,
        context: list[dict[str, Any]] | None = None,
    ) -> Agent:
        """Create the root agent and its session folder (the id is known from here on)."""
        settings = settings or self.settings
        packed = pack_inputs(inputs)
        session_id = new_session_id()
        log = SessionLog(
            self.sessions_dir(settings) / session_id,
            self._meta(session_id, settings, task, depth=0, parent=None),
        )
        agent = Agent(
            self, settings, task, log=log, agent_id=session_id, inputs=packed, context=context
        )
        self.agents[agent.id] = agent
        return agent

    def find_session(self, session_id: str, settings: Settings | None = None) -> Path:
        """The root folder of a session, by id or unique id prefix."""
        root = self.sessions_dir(settings or self.settings)
        exact = root / session_id
        if session_id and "/" not in session_id and exact.is_dir():
            return exact
        matches = [p for p in root.glob(f"{session_id}*") if p.is_dir()] if session_id else []
        if len(matches) != 1:
            how = "no session" if not matches else f"{len(matches)} sessions"
            raise ConfigError(f"--resume: {how} matching {session_id!r} in {root}")
        return matches[0]

    def resume_root(self, session_id: str, *, settings: Settings | None = None) -> Agent:
        """The root agent of an earlier session, its live context rebuilt from the log."""
        settings = settings or self.settings
        folder = self.find_session(session_id, settings)
        try:
            log, lines = SessionLog.reopen(folder)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--resume: cannot read {folder}: {exc}") from None
        meta = log.meta
        agent = Agent(self, settings, meta.task, log=log, agent_id=folder.name)
        agent.context = rebuild_context(lines, settings.max_turns_in_context)
        agent.resumed = True
        agent.children = [entry.to_json() for entry in meta.children]
        agent.usage = Usage(*meta.usage.pair())
        agent.usage_total = Usage(*meta.usage_total.pair())
        log.event("resumed")
        self.agents[agent.id] = agent
        return agent

    async def run(self, task: str, **kwargs: Any) -> str:
        """Run a root agent to its answer; raises ``AgentError`` if it ends without one."""
        return await self.new_root(task, **kwargs).run()

    def _meta(
        self, agent_id: str, settings: Settings, task: str, *, depth: int, parent: str | None
    ) -> AgentMeta:
        return AgentMeta(
            id=agent_id,
            parent=parent,
            depth=depth,
            model=settings.model,
            task=clean_text(task)[:MAX_INLINE_TASK],
            cwd=str(self.cwd),
            pid=os.getpid(),
            settings=settings.model_dump(mode="json", exclude={"api_key", "base_url", "home"}),
        )

    def skills_report(self, kernel: Kernel) -> tuple[str, dict[str, str]]:
        """The skills section of the prompt (the skills that loaded in this kernel), and the
        skills that failed to import with their errors."""
        if not self.skills:
            return "", {}
        report = skills.parse_bootstrap_output(kernel.bootstrap_output)
        return skills.prompt_section(self.skills, report["loaded"]), report["failed"]

    def forget(self, agent: Agent) -> None:
        self.agents.pop(agent.id, None)
        self.control.unregister(agent.id)

    async def start_kernel(self, agent: Agent) -> Kernel:
        assert self.run_dir is not None
        env = {
            **self._base_env,
            "RLM_CONTROL_ADDR": self.control.address,
            "RLM_AGENT_ID": agent.id,
            "RLM_AGENT_SECRET": self.control.register(agent.id),
            "RLM_DEPTH": str(agent.depth),
            "RLM_MAX_DEPTH": str(agent.settings.max_depth),
            "RLM_KERNEL_OUTPUT_LIMIT": str(kernel_output_limit(agent.settings.max_output)),
        }
        self.agents[agent.id] = agent
        return await self.launcher.start_kernel(
            f"k{next(self._kernel_numbers)}",
            env=env,
            bootstrap=self._bootstrap,
            depth=agent.depth,
            max_depth=agent.settings.max_depth,
            output_limit=agent.settings.max_output,
        )

    # -- control requests ------------------------------------------------------------------

    async def _handle(self, req: Request) -> tuple[dict[str, Any], list[bytes]] | None:
        agent = self.agents.get(req.agent_id)
        if agent is None:
            return _error(RLMError("this agent is no longer running"))
        if req.msg_type == "inputs_request":
            try:
                InputsRequest.parse(req.content, "inputs_request")
            except ConfigError as exc:
                return _error(exc)
            infos, blobs = agent.inputs
            return InputsReply.model_validate({"inputs": infos}).content(), list(blobs)
        if req.msg_type == "run_request":
            return await self._spawn(agent, req)
        return _error(RLMError(f"unknown request {req.msg_type!r}"))

    async def _spawn(self, parent: Agent, req: Request) -> tuple[dict[str, Any], list[bytes]]:
        depth = parent.depth + 1
        if depth > parent.settings.max_depth:
            return _error(
                DepthLimitError(
                    f"no sub-agent allowed: depth {depth} exceeds RLM_MAX_DEPTH="
                    f"{parent.settings.max_depth}"
                )
            )
        try:
            request: RunRequest = RunRequest.parse(req.content, "run_request")
            if len(request.inputs) != len(req.buffers):
                raise ConfigError("inputs: malformed input list")
            settings = _child_settings(parent.settings, request.content())
        except ConfigError as exc:
            return _error(exc)
        infos = [info.content() for info in request.inputs]
        current = asyncio.current_task()
        if current is not None:
            parent.cell_children.add(current)
        async with self._slots[depth]:
            return await self._run_child(parent, settings, request.task, (infos, req.buffers))

    async def _run_child(
        self,
        parent: Agent,
        settings: Settings,
        task: str,
        inputs: tuple[list[dict[str, str]], list[bytes]],
    ) -> tuple[dict[str, Any], list[bytes]]:
        while True:
            name = f"sub-{secrets.token_hex(3)}"
            if not (parent.log.path / name).exists():
                break
        agent_id = f"{parent.id}/{name}"
        log = SessionLog(
            parent.log.path / name,
            self._meta(agent_id, settings, task, depth=parent.depth + 1, parent=parent.id),
        )
        entry: dict[str, Any] = {"id": name, "task": task[:200], "status": "running"}
        parent.child_changed(entry)
        parent.emit(ev.ChildSpawned, child_id=agent_id, task=task)
        child = Agent(
            self, settings, task, log=log, agent_id=agent_id, parent=parent, inputs=inputs
        )
        self.agents[agent_id] = child
        try:
            answer = await child.run()
        except AgentError as exc:
            entry["status"] = "error"
            exc.session_path = str(log.path)
            return _error(exc)
        except asyncio.CancelledError:
            entry["status"] = "cancelled"
            raise
        finally:
            if entry["status"] == "running":
                entry["status"] = "done"
            parent.child_changed(entry)
        return {"status": "ok", "answer": answer, "session_path": str(log.path)}, []


def _child_settings(parent: Settings, content: dict[str, Any]) -> Settings:
    overrides = {k: content.get(k) for k in ("model", "max_turns", "tools")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return parent
    base = parent.model_dump()
    try:
        return load_settings(**{**base, **overrides})
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--max-turns", "max_turns").replace("--", "")) from None


def _error(exc: BaseException) -> tuple[dict[str, Any], list[bytes]]:
    """The error reply to a control request (decoded in the kernel by ``decode_error``)."""
    return encode_error(exc), []
