"""The orchestrator: the one process that owns every agent of a run.

It holds the model client (and so the API key), the private run directory, the control
channel, the session tree and the concurrency slots, and is the :class:`AgentHost` of every
agent. Kernels only run code; when a cell calls ``rlm.run`` the request arrives here, is
checked against the calling agent's depth, settings and running cell, and becomes a child
agent run as an asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.agent import events as ev
from rlm.agent.host import KernelHandle
from rlm.agent.loop import Agent
from rlm.agent.model import ModelClient, ModelReply, OnDelta, OnRetry
from rlm.agent.prompt import CWD_EXPRESSION
from rlm.config import Settings, derive_settings
from rlm.control.dispatch import Dispatcher, Request
from rlm.control.inputs import Packed, Spilled, pack_inputs, select_inputs, spill_inputs
from rlm.control.kernel_channel import KernelControl
from rlm.errors import AgentError, ConfigError, DepthLimitError, RLMError
from rlm.kernels.environment import check_kernel_env, kernel_environment
from rlm.runtime import agents
from rlm.runtime.budget import CostMeter
from rlm.runtime.functions import HostFunctions
from rlm.runtime.limits import raise_open_files_limit
from rlm.runtime.llm import LlmCalls
from rlm.runtime.mcp import McpConfig, McpServers, load_mcp_config
from rlm.runtime.observer import Observer
from rlm.runtime.pending import PendingRequests
from rlm.runtime.spawned import MESSAGES as SPAWN_MESSAGES
from rlm.runtime.spawned import Spawned
from rlm.sandbox import limits
from rlm.sandbox.harden import harden_orchestrator
from rlm.sandbox.policy import resolve_mode, sandbox_env
from rlm.schema.control import InputsReply, InputsRequest, RunRequest, encode_error
from rlm.skills import discovery as skills

if TYPE_CHECKING:
    # The kernel side (jupyter_client, zmq, tornado, traitlets): imported once the first
    # model request is on the wire, see ``Orchestrator._kernel_side``.
    from rlm.control.channel import ControlServer
    from rlm.kernels.gateway import GatewayKernel, Gateways
    from rlm.kernels.kernel import Kernel
    from rlm.kernels.launcher import KernelLauncher

__all__ = ["Orchestrator"]

#: The orchestrator's kernel side: jupyter_client, zmq, tornado and traitlets come with them.
#: Imported in a worker thread once the first model request is out (or when a kernel is
#: needed before it), so a run's first request never waits for them.
KERNEL_SIDE_MODULES = ("rlm.control.channel", "rlm.kernels.gateway", "rlm.kernels.launcher")

#: Bytes of a unix socket path (``sun_path`` less its NUL): the control socket's must fit.
MAX_SOCKET_PATH = 107

_BOOTSTRAP = "import asyncio\nimport rlm\nimport rlm.inkernel\nrlm.inkernel.setup()\n"
#: The user expression that hands a kernel its control secret (see ``start_kernel``).
IDENTITY_EXPRESSION = "rlm_identity"
_CELL_ENDED = (
    "the cell that called rlm.run has ended: a sub-agent belongs to the cell that starts it, "
    "so await it (or the task that runs it) before the cell ends"
)


def kernel_output_limit(max_output: int) -> int:
    """Characters one cell may send over IOPub: enough for the collector to apply
    ``RLM_MAX_OUTPUT`` exactly, small enough to keep the orchestrator's memory bounded."""
    from rlm.kernels.kernel import MEMORY_CEILING

    return max(2 * max_output, MEMORY_CEILING) if max_output > 0 else MEMORY_CEILING


def _create_home(home: Path) -> None:
    """Create RLM_HOME if missing, with a ``.gitignore`` of ``*`` in it: the default home is
    ``.rlm`` in the working directory, which must not show up as untracked in a git checkout.
    A home that already exists is the user's and is left as it is."""
    try:
        home.mkdir(parents=True)
    except FileExistsError:
        return
    (home / ".gitignore").write_text("*\n", encoding="utf-8")


class Orchestrator:
    """Async context manager: ``async with Orchestrator(settings) as o: await o.run(task)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        cwd: Path | None = None,
        on_event: ev.EventCallback | None = None,
        functions: Iterable[Callable[..., Any]] = (),
        mcp_config: McpConfig | dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.functions = HostFunctions(functions)
        source = mcp_config if mcp_config is not None else settings.mcp_config
        #: The MCP servers of ``RLM_MCP_CONFIG`` (or ``mcp_config``), started on entry.
        self.mcp = McpServers(
            load_mcp_config(source) if source is not None else None,
            settings.mcp_timeout,
            settings.mcp_start_timeout,
        )
        try:
            self._cwd = (cwd or Path.cwd()).resolve()
        except FileNotFoundError:
            raise ConfigError("the working directory no longer exists; cd somewhere") from None
        self.observer = Observer(on_event)
        self.skills: list[skills.SkillInfo] = []
        self._bootstrap = _BOOTSTRAP
        self.agents: dict[str, Agent] = {}
        self._kernel_numbers = itertools.count(1)
        self._slots: defaultdict[int, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.settings.max_concurrency)
        )
        check_kernel_env()
        self._pending = PendingRequests(settings)
        self._base_env = kernel_environment()
        self.llm = LlmCalls(settings)
        #: ``RLM_SANDBOX`` as it applies here (``workspace`` falls back to ``off``, warned).
        self.sandbox = resolve_mode()
        self.budget = CostMeter(settings)
        self.spawned = Spawned(self)
        self._resources = contextlib.AsyncExitStack()
        self.run_dir: Path | None = None
        self.model: ModelClient
        #: Handles control requests from both transports (kernel channels and ipc).
        self.dispatcher = Dispatcher(self._handle)
        self.control: ControlServer
        self.launcher: KernelLauncher
        #: The control server and kernel launcher being set up (see ``_kernel_side``).
        self._kernel_side_task: asyncio.Future[None] | None = None
        #: Set once the first model request is on the wire (or has ended): the kernel side
        #: that a background kernel start waits for begins then.
        self._request_out = asyncio.Event()

    async def __aenter__(self) -> Orchestrator:
        # Each resource is registered for cleanup as soon as it exists: a failure half-way
        # (an unusable run dir, a socket that cannot bind, a zygote that cannot start)
        # releases what was already set up and leaves nothing behind. The kernel side
        # (control server, launcher, zygote) is set up later, by ``_kernel_side``.
        harden_orchestrator()
        raise_open_files_limit()  # ~3 descriptors per kernel: 1,024 ends near 300 kernels
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.observer.aclose)
            self.skills = await asyncio.to_thread(skills.discover)
            names = [skill.name for skill in self.skills]
            if self.mcp:
                self.mcp.set_log_dir(self._mcp_logs())
            await stack.enter_async_context(self.mcp)
            self._bootstrap = (
                _BOOTSTRAP
                + self.functions.bootstrap_source()
                + self.mcp.bootstrap_source()
                + (skills.kernel_bootstrap_source(names) if names else "")
            )
            self.run_dir = Path(tempfile.mkdtemp(prefix="rlm-"))  # mkdtemp makes it 0700
            stack.callback(shutil.rmtree, self.run_dir, ignore_errors=True)
            if limits.limits_env():  # RLM_KERNEL_*: the kernels' cgroups, once they are gone
                stack.callback(limits.sweep)
            self._base_env.update(
                sandbox_env(
                    self.sandbox,
                    cwd=self._cwd,
                    run_dir=self.run_dir,
                    hidden=[self._cwd / self.settings.home.expanduser() / "sessions"],
                )
            )
            self._base_env["RLM_CONTROL_TRANSPORT"] = self.settings.control_transport
            self._base_env["RLM_CONTROL_MAX_PART"] = str(self.settings.max_message_bytes)
            self.model = ModelClient(self.settings)
            self.model.on_sent = self._request_out.set
            stack.push_async_callback(self.model.close)
            control = self.run_dir / "control"  # the control server's socket, bound later
            if len(os.fsencode(control)) > MAX_SOCKET_PATH:
                raise ConfigError(
                    f"cannot create the control socket {control} (longer than a unix socket "
                    "path may be); is TMPDIR too long for a unix socket path?"
                )
            self._resources = stack.pop_all()
        if self.settings.kernel_gateway:
            # Remote kernels: the prompt waits for the kernel anyway, and a gateway that
            # refuses the token is one line (exit 2) before the run, not an agent error.
            try:
                await self.kernel_side()
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
        return self

    async def kernel_side(self) -> None:
        """Wait until the control server and the kernel launcher are up (starting them now if
        nothing has yet); raises what their start raised. Every kernel start waits for it."""
        if self._kernel_side_task is None:
            self._kernel_side_task = asyncio.ensure_future(self._kernel_side())
        await asyncio.shield(self._kernel_side_task)

    async def _kernel_side(self) -> None:
        """Import and start what kernels need: the control server, the gateways' check, the
        launcher and (with sub-agents allowed) the zygote.

        Why not in ``__aenter__``: these modules bring jupyter_client, zmq, tornado and
        traitlets, about as long to import as a kernel takes to start, and the root agent's
        first model request needs none of them. The import runs in a worker thread (the event
        loop keeps serving the request); each resource joins the orchestrator's cleanup as
        soon as it exists, so ``__aexit__`` releases a half-finished start too.
        """
        assert self.run_dir is not None, "the orchestrator is not open"
        for name in KERNEL_SIDE_MODULES:
            await asyncio.to_thread(importlib.import_module, name)
        from rlm.control.channel import ControlServer
        from rlm.kernels.launcher import KernelLauncher

        stack = self._resources
        self.control = ControlServer(self.run_dir, self.dispatcher)
        stack.push_async_callback(self.control.close)
        stack.push_async_callback(self.dispatcher.close)
        await self.control.start()
        gateways = self._gateways()
        if gateways is not None:
            await gateways.check()
        self.launcher = KernelLauncher(
            self.run_dir,
            cwd=self._cwd,
            env=self._base_env,
            mode=self.settings.kernel_start,
            pool_size=self.settings.kernel_pool,
            max_message_bytes=self.settings.max_message_bytes,
            gateways=gateways,
            kernel_spec=self.settings.kernel_spec,
        )
        stack.push_async_callback(self.launcher.close)
        if self.settings.max_depth > 0:
            await self.launcher.start_zygote()  # imports in the background

    def _gateways(self) -> Gateways | None:
        """``RLM_KERNEL_GATEWAY``'s gateways, or None for local kernels."""
        settings = self.settings
        if not settings.kernel_gateway:
            return None
        from rlm.kernels.gateway import Gateways

        return Gateways(
            settings.kernel_gateway,
            settings.gateway_token,
            spec_name=settings.kernel_spec,
            max_message_bytes=settings.max_message_bytes,
        )

    async def __aexit__(self, *exc_info: object) -> None:
        task = self._kernel_side_task
        if task is not None:  # still starting: stop it where it is (its error is not news)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._resources.aclose()

    def _mcp_logs(self) -> Path | None:
        """``$RLM_HOME/mcp``: the stderr logs of the MCP servers (None if it cannot be made)."""
        path = self.sessions_dir(self.settings).parent / "mcp"
        try:
            path.mkdir(mode=0o700, exist_ok=True)
        except OSError:
            return None
        return path

    # -- AgentHost -------------------------------------------------------------------------

    @property
    def cwd(self) -> Path:
        return self._cwd

    @property
    def has_skills(self) -> bool:
        # host functions are listed in the same part of the prompt as skills
        return bool(self.skills) or bool(self.functions) or bool(self.mcp)

    def emit(self, event: ev.Event) -> None:
        self.observer.emit(event)

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        model: str,
        *,
        on_retry: OnRetry | None = None,
        on_delta: OnDelta | None = None,
    ) -> ModelReply:
        self.budget.check()
        if self._request_out.is_set():
            return await self.model.complete(
                messages, tools, model, on_retry=on_retry, on_delta=on_delta
            )

        def first_delta(kind: Any, text: str) -> None:
            self._request_out.set()  # a reply is streaming: the request is out for sure
            if on_delta is not None:
                on_delta(kind, text)

        try:
            return await self.model.complete(
                messages, tools, model, on_retry=on_retry, on_delta=first_delta
            )
        finally:  # whatever became of it: the kernel side must not wait any longer
            self._request_out.set()

    def charge(self, model: str, usage: Any) -> float:
        return self.budget.charge(model, usage)

    def skills_report(self, kernel: KernelHandle) -> tuple[str, dict[str, str]]:
        """The skills section of the prompt (the skills that loaded in this kernel), and the
        skills that failed to import with their errors."""
        functions = self.functions.prompt_section() + self.mcp.prompt_section()
        if not self.skills:
            return functions, {}
        report = skills.parse_bootstrap_report(getattr(kernel, "bootstrap_values", {}))
        return skills.prompt_section(self.skills, report.loaded) + functions, report.failed

    async def agent_ending(self, agent: Agent) -> None:
        await self.spawned.parent_ending(agent)

    def slot(self, depth: int) -> asyncio.Semaphore:
        """The concurrency slots of one depth level (see docs/architecture.md)."""
        return self._slots[depth]

    def forget(self, agent: Agent) -> None:
        self.agents.pop(agent.id, None)
        control: ControlServer | None = getattr(self, "control", None)  # None: not started
        if control is not None:
            control.unregister(agent.id)

    async def start_kernel(
        self, agent: Agent, *, needed: asyncio.Event | None = None
    ) -> Kernel | GatewayKernel:
        """Start ``agent``'s kernel.

        The control secret is not in the kernel's environment (any same-uid process can read
        ``/proc/<kernel>/environ``): it travels in a user expression of the bootstrap's execute
        request, over the kernel's owner-only ipc socket, evaluated after the bootstrap (and
        again after a restart). An expression, not bootstrap code: a failing bootstrap's
        traceback quotes its code, never its user expressions.

        ``needed``: the agent sends its first model request meanwhile, so the kernel side
        (imports and all) waits until that request is on the wire, or until ``needed`` says
        the agent waits for the kernel first (a long task goes to a kernel variable before
        the request); a prestarted root kernel keeps initialising in its own process.
        """
        assert self.run_dir is not None
        if needed is not None and self._kernel_side_task is None:
            await _first_set(self._request_out, needed)
        await self.kernel_side()
        secret = self.control.register(agent.id)
        identity = f"__import__('rlm.inkernel', fromlist=['receive']).receive({secret!r})"
        env = {
            **self._base_env,
            "RLM_CONTROL_ADDR": self.control.address,
            "RLM_AGENT_ID": agent.id,
            "RLM_DEPTH": str(agent.depth),
            "RLM_MAX_DEPTH": str(agent.settings.max_depth),
            "RLM_KERNEL_OUTPUT_LIMIT": str(kernel_output_limit(agent.settings.max_output)),
        }
        self.agents[agent.id] = agent
        kernel = await self.launcher.start_kernel(
            f"k{next(self._kernel_numbers)}",
            env=env,
            bootstrap=self._bootstrap,
            bootstrap_expressions={
                **skills.REPORT_EXPRESSIONS,
                **CWD_EXPRESSION,  # a remote kernel's directory, for the prompt
                IDENTITY_EXPRESSION: identity,
            },
            depth=agent.depth,
            max_depth=agent.settings.max_depth,
            output_limit=agent.settings.max_output,
        )
        # its cells' requests on the kernel's own channels (unused where it has no subshell)
        kernel.control = KernelControl(self.dispatcher, agent.id, kernel)
        if kernel.location is not None:  # the session log says where it runs
            agent.log.update(kernel=kernel.location)
            self._warn_missing_skills(agent, kernel)
        return kernel

    def _warn_missing_skills(self, agent: Agent, kernel: Kernel | GatewayKernel) -> None:
        """Skills are found here but imported where the kernel runs: say once, plainly, which
        of them that machine lacks (the log's ``skill_failed`` has the whole error)."""
        _, failed = self.skills_report(kernel)
        where = " ".join(str(value) for value in (kernel.location or {}).values())
        for name, error in failed.items():
            reason = (error.strip().splitlines() or [""])[-1][:300]
            agent.warn_once(
                f"remote-skill:{name}",
                f"skill {name} is not usable in the kernel at {where}: skills must be installed "
                f"where the kernel runs ({reason})",
            )

    # -- agents ----------------------------------------------------------------------------

    def sessions_dir(self, settings: Settings) -> Path:
        home = settings.home.expanduser()
        path = home / "sessions"
        try:
            _create_home(home)
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                path.chmod(0o700)  # whatever the umask; an existing folder is left as it is
        except OSError as exc:
            raise ConfigError(f"RLM_HOME: cannot create {path}: {exc.strerror or exc}") from None
        try:  # an existing folder may still be read-only: try what the session log will do
            os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=path))
        except OSError as exc:
            raise ConfigError(f"RLM_HOME: cannot write to {path}: {exc.strerror or exc}") from None
        return path

    async def new_root(
        self,
        task: str,
        *,
        settings: Settings | None = None,
        inputs: dict[str, Any] | None = None,
        context: list[dict[str, Any]] | None = None,
    ) -> Agent:
        """Create the root agent and its session folder (the id is known from here on)."""
        settings = settings or self.settings
        self.budget.require_price(settings.model)
        packed = await asyncio.to_thread(pack_inputs, inputs) if inputs else None
        agent = agents.new_root(
            self, settings, self.sessions_dir(settings), task, inputs=packed, context=context
        )
        self.agents[agent.id] = agent
        return agent

    def find_session(self, session_id: str, settings: Settings | None = None) -> Path:
        """The root folder of a session, by id or unique id prefix (the sessions reader's
        resolver: folder names only, no paths or glob patterns)."""
        from rlm.logs.store import SessionError, find_session

        settings = settings or self.settings
        self.sessions_dir(settings)  # an unusable RLM_HOME is a ConfigError naming it
        try:
            return find_session(settings.home.expanduser(), session_id, agents=False).path
        except SessionError as exc:
            raise ConfigError(f"--resume: {exc}") from None

    def resume_root(self, session_id: str, *, settings: Settings | None = None) -> Agent:
        """The root agent of an earlier session, its live context rebuilt from the log."""
        settings = settings or self.settings
        agent = agents.resume_root(self, settings, self.find_session(session_id, settings))
        self.agents[agent.id] = agent
        return agent

    async def run(self, task: str, **kwargs: Any) -> str:
        """Run a root agent to its answer; raises ``AgentError`` if it ends without one."""
        agent = await self.new_root(task, **kwargs)
        return await agent.run()

    # -- control requests ------------------------------------------------------------------

    async def _handle(self, req: Request) -> tuple[dict[str, Any], list[bytes]] | None:
        agent = self.agents.get(req.agent_id)
        if agent is None:
            return _error(RLMError("this agent is no longer running"))
        if req.msg_type == "inputs_request":
            try:
                request = InputsRequest.parse(req.content, "inputs_request")
            except ConfigError as exc:
                return _error(exc)
            inputs = agent.inputs
            infos, blobs = await asyncio.to_thread(select_inputs, inputs, request.names)
            if self.run_dir is not None:  # the kernel has them now: keep big ones on disk only
                await asyncio.to_thread(spill_inputs, inputs, self.run_dir)
            return InputsReply.model_validate({"inputs": infos}).content(), blobs
        if req.msg_type == "run_request":
            return await self._spawn(agent, req)
        if req.msg_type == "llm_request":
            return await self.llm.handle(agent, req, self.model, self.budget)
        if req.msg_type == "function_request":
            if self.mcp.owns(str(req.content.get("name"))):
                return await self.mcp.functions.handle(agent, req)
            return await self.functions.handle(agent, req)
        if req.msg_type in SPAWN_MESSAGES:
            return await self.spawned.handle(agent, req)
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
            tools = request.tools
            settings = derive_settings(
                parent.settings,
                model=request.model,
                max_turns=request.max_turns,
                tools=",".join(tools) if isinstance(tools, list) else tools,
            )
            self.budget.require_price(settings.model)
            self.budget.check("sub-agent")
        except (ConfigError, AgentError) as exc:
            return _error(exc)
        if request.cell is not None and request.cell != parent.running_cell:
            return _error(RLMError(_CELL_ENDED))
        infos = [info.content() for info in request.inputs]
        current = asyncio.current_task()
        if current is not None:
            parent.adopt_cell_child(current)
        slots = self._slots[depth]
        if slots.locked():  # it must wait, and its buffers with it: within limits only
            try:
                with self._pending.waiting(parent.id, parent.settings, req.buffers):
                    await slots.acquire()
            except ConfigError as exc:
                return _error(exc)
        else:
            await slots.acquire()
        try:
            try:
                self.budget.check("sub-agent")  # spent while this one waited for its slot
            except AgentError as exc:
                return _error(exc)
            blobs: list[bytes | Spilled] = list(req.buffers)
            return await self._run_child(parent, settings, request.task, (infos, blobs))
        finally:
            slots.release()

    async def _run_child(
        self, parent: Agent, settings: Settings, task: str, inputs: Packed
    ) -> tuple[dict[str, Any], list[bytes]]:
        child = agents.new_child(self, parent, settings, task, inputs)
        self.agents[child.id] = child
        entry: dict[str, Any] = {
            "id": child.log.path.name,
            "task": task[:200],
            "status": "running",
        }
        parent.child_changed(entry)
        parent.emit(ev.ChildSpawned, child_id=child.id, task=task)
        try:
            answer = await child.run()
        except AgentError as exc:
            entry["status"] = "error"
            exc.session_path = str(child.log.path)
            return _error(exc)
        except asyncio.CancelledError:
            entry["status"] = "cancelled"
            raise
        finally:
            if entry["status"] == "running":
                entry["status"] = "done"
            parent.child_changed(entry)
        return {"status": "ok", "answer": answer, "session_path": str(child.log.path)}, []


async def _first_set(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _error(exc: BaseException) -> tuple[dict[str, Any], list[bytes]]:
    """The error reply to a control request (decoded in the kernel by ``decode_error``)."""
    return encode_error(exc), []
