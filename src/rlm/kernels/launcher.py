"""How an orchestrator's kernels start: forked or cold, and a warm pool for sub-agents.

:class:`KernelLauncher` is owned by one orchestrator. In ``fork`` mode (``RLM_KERNEL_START``,
the default on Linux) it starts a zygote (see :mod:`rlm.zygote`) when the orchestrator opens and
writes an ``rlm-fork`` kernelspec whose provisioner forks kernels from it; any failure falls
back to cold starts for the rest of the run, logged once.

The warm pool (``RLM_KERNEL_POOL=N``) keeps N kernels started ahead. It is filled only once
the run spawns its first sub-agent, so a run without sub-agents never pays for it; after
that every kernel start takes a pooled kernel (a ready one, else the oldest one still
starting) and the pool refills in the background. Pooled kernels are started with the
orchestrator's kernel environment and working directory and have never run user code. The
agent-specific part (the control channel's address, agent id and secret, the depth) cannot be
known in advance, so when a kernel is handed out its bootstrap first replaces ``os.environ``
wholesale with the agent's environment and changes to the agent's directory, then runs the
usual ``rlm.inkernel.setup()``; the same bootstrap runs again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from rlm.kernels import prestart
from rlm.kernels.fork_client import Zygote
from rlm.kernels.gateway import GatewayKernel, Gateways, env_code
from rlm.kernels.kernel import Kernel
from rlm.kernels.memory import MAX_MESSAGE_BYTES
from rlm.kernels.prestart_provisioner import PROVISIONER_NAME as PRESTARTED
from rlm.kernels.prestart_provisioner import hand_over
from rlm.zygote import PROVISIONER_NAME, fork_supported, preload_modules
from rlm.zygote.child import adopt_code

__all__ = ["KernelLauncher", "KernelPool"]

log = logging.getLogger("rlm.kernels.launcher")

#: Variables the orchestrator adds to every kernel's base environment after the CLI's
#: prestart (the kernel gets them with the rest of its environment when it is adopted).
_CONTROL_VARS = ("RLM_CONTROL_TRANSPORT", "RLM_CONTROL_MAX_PART")
_WARM_UP = "import asyncio\nimport rlm\nimport rlm.inkernel\nimport rlm.zygote.child\n"


class KernelPool:
    """Up to ``size`` kernels started ahead by ``make(name)``; see the module docstring."""

    def __init__(self, size: int, make: Callable[[str], Awaitable[Kernel]]) -> None:
        self.size = size
        self._make = make
        self._starts: deque[asyncio.Task[Kernel]] = deque()
        self._count = 0
        self.active = False
        self.closed = False
        self.broken: str | None = None
        self.handed_out = 0

    def activate(self) -> None:
        """Start filling (idempotent)."""
        if not self.active:
            self.active = True
            self._refill()

    def refill(self) -> None:
        """Start kernels until ``size`` are ready or starting (once active)."""
        self._refill()

    def _refill(self) -> None:
        if not self.active or self.closed or self.broken:
            return
        while len(self._starts) < self.size:
            self._count += 1
            task = asyncio.ensure_future(self._make(f"pool{self._count}"))
            task.add_done_callback(self._started)
            self._starts.append(task)

    def _started(self, task: asyncio.Task[Kernel]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        if task in self._starts:
            self._starts.remove(task)
        if self.broken is None and not self.closed:
            self.broken = f"{type(task.exception()).__name__}: {task.exception()}"
            log.warning("rlm: warm kernel pool disabled, a pooled kernel failed to start: %s",
                        self.broken)  # fmt: skip

    @property
    def ready(self) -> int:
        """Kernels started and waiting (for tests and the benchmark)."""
        return sum(1 for t in self._starts if t.done() and not t.cancelled())

    async def take(self) -> Kernel | None:
        """A pooled kernel: a ready one, else the oldest still starting; ``None`` if empty.

        The pool is not refilled here: call :meth:`refill` once the kernel is handed over, so
        the next start (in this event loop and on the CPU) does not slow the handover down.
        """
        ready = [t for t in self._starts if t.done() and not t.cancelled()]
        task = ready[0] if ready else (self._starts[0] if self._starts else None)
        if task is None:
            return None
        self._starts.remove(task)
        try:
            kernel = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            self._give_back(task)  # the taker was cancelled, not the start
            raise
        except Exception:
            return None  # logged by _started; the caller starts its own kernel
        self.handed_out += 1
        return kernel

    def _give_back(self, task: asyncio.Task[Kernel]) -> None:
        if self.closed:
            task.add_done_callback(_shutdown_when_started)
        else:
            self._starts.appendleft(task)

    async def close(self) -> None:
        """Cancel starts in flight and shut every waiting kernel down."""
        self.closed = True
        starts, self._starts = list(self._starts), deque()
        for task in starts:
            task.cancel()
        results = await asyncio.gather(*starts, return_exceptions=True)
        await asyncio.gather(
            *(k.shutdown() for k in results if isinstance(k, Kernel)), return_exceptions=True
        )


_LATE_SHUTDOWNS: set[asyncio.Future[None]] = set()


def _shutdown_when_started(task: asyncio.Task[Kernel]) -> None:
    if not task.cancelled() and task.exception() is None:
        future = asyncio.ensure_future(task.result().shutdown())
        _LATE_SHUTDOWNS.add(future)
        future.add_done_callback(_LATE_SHUTDOWNS.discard)


class KernelLauncher:
    """Starts the kernels of one orchestrator (fork or cold, pooled or not).

    The zygote is only worth its start-up (an interpreter importing everything, in the
    background) when sub-agents may follow, so it is started by the first kernel of an agent
    that may spawn children (``depth < max_depth``) or is one. Sub-agent kernels wait for it;
    a root kernel does not: while the zygote is still importing, the root starts cold beside it.
    The ``rlm`` command starts the zygote at process start instead, with the root kernel forked
    from it (:mod:`rlm.kernels.prestart`): the launcher adopts both when they match its own.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        cwd: Path,
        env: dict[str, str],
        mode: Literal["fork", "cold"] = "fork",
        pool_size: int = 0,
        preload: list[str] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        gateways: Gateways | None = None,
        kernel_spec: str | None = None,
    ) -> None:
        self.run_dir = run_dir
        #: Remote kernels (``RLM_KERNEL_GATEWAY``): every kernel starts there, no zygote or pool.
        self.gateways = gateways
        #: An installed kernelspec (``RLM_KERNEL_SPEC``, e.g. a gateway provisioner's) for
        #: every kernel: started by its provisioner, Curve-encrypted; no zygote or pool.
        self.kernel_spec = kernel_spec if gateways is None else None
        #: Every kernel's message size limit, pooled ones included (set before they connect).
        self.max_message_bytes = max_message_bytes
        self.cwd = cwd
        self.env = env
        if env.get("RLM_SANDBOX") == "strict":
            mode = "cold"  # each strict kernel is its own bwrap sandbox (rlm.sandbox.bwrap)
        self.mode = mode
        self.zygote: Zygote | None = None
        if mode == "fork" and gateways is None and kernel_spec is None:
            self.zygote = Zygote(
                run_dir, env=env, preload=preload_modules(env) if preload is None else preload
            )
        pooled = pool_size > 0 and gateways is None and kernel_spec is None
        self.pool = KernelPool(pool_size, self._pool_kernel) if pooled else None
        #: Local kernel starts in flight at once (forked, cold and pooled alike). A burst of
        #: 1,000 sub-agents would otherwise start 1,000 kernels together on a few cores, and
        #: the last would pass their start timeout while the first were still initialising;
        #: queued here, each start's timeout counts its own start, not the queue.
        self.max_starting = max(8, 4 * (os.cpu_count() or 1))
        self._starting: asyncio.Semaphore | None = None

    async def _start(self, kernel: Kernel) -> None:
        """``kernel.start()`` in one of ``max_starting`` slots."""
        if self._starting is None:
            self._starting = asyncio.Semaphore(self.max_starting)
        async with self._starting:
            await kernel.start()

    @property
    def forking(self) -> bool:
        """True while kernels are forked (fork mode and no failure so far)."""
        return self.zygote is not None and not self.zygote.disabled

    async def start_zygote(self) -> None:
        """Spawn the zygote (fork mode, once); returns without waiting for it to be ready."""
        zygote = self.zygote
        if zygote is None or zygote.started or zygote.disabled:
            return
        if not fork_supported():
            zygote.disable(f"forking needs Linux (this is {sys.platform})")
            return
        pre = prestart.take_zygote(self._prestart_env(), zygote.preload)
        if pre is not None:  # started at CLI start, and the root kernel forked from it
            zygote.adopt(pre)
            return
        try:
            await zygote.start()
        except OSError as exc:
            zygote.disable(f"cannot start the zygote: {exc}")

    async def close(self) -> None:
        if self.gateways is not None:
            self.gateways.close()
        if self.pool is not None:
            await self.pool.close()
        if self.zygote is not None:
            await self.zygote.close()

    def new_kernel(
        self, name: str, *, env: dict[str, str], bootstrap: str, wait: bool = True, **kw: Any
    ) -> Kernel:
        """A kernel object (not started) whose kernelspec forks when forking is on."""
        spec, provisioner = "rlm", None
        if self.forking:
            assert self.zygote is not None
            spec = PROVISIONER_NAME if wait else f"{PROVISIONER_NAME}-nowait"
            config = {"zygote": self.zygote.path, "wait_for_zygote": wait}
            provisioner = {"provisioner_name": PROVISIONER_NAME, "config": config}
        return Kernel(
            self.run_dir,
            name,
            cwd=self.cwd,
            env=env,
            bootstrap=bootstrap,
            spec_name=spec,
            provisioner=provisioner,
            **{"max_message_bytes": self.max_message_bytes, **kw},
        )

    async def _pool_kernel(self, name: str) -> Kernel:
        # The warm-up pays a kernel's slow first execution ahead of time; it only imports what
        # every agent's bootstrap imports anyway.
        kernel = self.new_kernel(name, env=self.env, bootstrap=_WARM_UP)
        await self._start(kernel)
        return kernel

    async def _adopt(
        self, kernel: Kernel, env: dict[str, str], cwd: Path, bootstrap: str, kw: dict[str, Any]
    ) -> bool:
        """Hand a pooled kernel to an agent; False (kernel shut down) if it cannot be used,
        e.g. it died while waiting: the caller then starts a fresh one."""
        kernel.bootstrap = adopt_code(env, str(cwd)) + bootstrap
        for key, value in kw.items():
            setattr(kernel, key, value)
        try:
            if await kernel.is_alive():
                await kernel.run_bootstrap()
                kernel.env, kernel.cwd = env, cwd
                return True
        except Exception as exc:
            log.warning("rlm: a pooled kernel could not be handed out (%s); starting one", exc)
            await kernel.shutdown()
            return False
        except BaseException:
            await kernel.shutdown()
            raise
        await kernel.shutdown()
        return False

    async def start_kernel(
        self,
        name: str,
        *,
        env: dict[str, str],
        bootstrap: str,
        depth: int = 0,
        max_depth: int = 0,
        cwd: Path | None = None,
        **kw: Any,
    ) -> Kernel | GatewayKernel:
        """A started kernel for an agent at ``depth``, with ``env``, ``cwd`` and ``bootstrap``.

        A sub-agent (``depth > 0``) activates the warm pool; once active, every start takes
        from it when it can. ``kw`` are further :class:`~rlm.kernels.kernel.Kernel` attributes
        (``output_limit``, ``interrupt_grace``).
        """
        if self.gateways is not None:
            remote = self.gateways.new_kernel(name, env=env, bootstrap=bootstrap, **kw)
            await remote.start()
            return remote
        cwd = cwd or self.cwd
        if self.kernel_spec is not None:
            # a provisioner on another host may pass no variable through: the bootstrap sets
            # rlm's own, as for a gateway kernel
            installed = Kernel(
                self.run_dir,
                name,
                cwd=cwd,
                env=env,
                bootstrap=env_code(env) + bootstrap,
                spec_name=self.kernel_spec,
                installed_spec=True,
                **{"max_message_bytes": self.max_message_bytes, **kw},
            )
            await installed.start()
            return installed
        if depth > 0 or max_depth > depth:
            await self.start_zygote()
        if self.pool is not None and depth > 0:
            self.pool.activate()
        if self.pool is not None and self.pool.active:
            try:
                kernel = await self.pool.take()
                if kernel is not None and await self._adopt(kernel, env, cwd, bootstrap, kw):
                    return kernel
            finally:
                self.pool.refill()
        if depth == 0:
            adopted = await self._adopt_prestarted(name, env, cwd, bootstrap, kw)
            if adopted is not None:
                return adopted
        kernel = self.new_kernel(name, env=env, bootstrap=bootstrap, wait=depth > 0, **kw)
        kernel.cwd = cwd
        await self._start(kernel)
        return kernel

    def _prestart_env(self) -> dict[str, str]:
        """The base environment the CLI's prestart would have used for this launcher's
        kernels (without the variables the orchestrator adds after it)."""
        return {k: v for k, v in self.env.items() if k not in _CONTROL_VARS}

    async def _adopt_prestarted(
        self, name: str, env: dict[str, str], cwd: Path, bootstrap: str, kw: dict[str, Any]
    ) -> Kernel | None:
        """The kernel the CLI started at process start (:mod:`rlm.kernels.prestart`), if it
        is the kernel this launcher would start: the same base environment (which also rules
        out a sandbox or kernel limits: they add variables), never after a remote or
        installed kernelspec (handled before). None otherwise (and that kernel is killed)."""
        pre = prestart.take(self._prestart_env())
        if pre is None:
            return None
        hand_over(pre)
        config: dict[str, Any] = {}
        if self.forking:  # a forked root that failed falls back to a fork, else a cold start
            assert self.zygote is not None
            config = {"zygote": self.zygote.path, "wait_for_zygote": False}
        kernel = Kernel(
            self.run_dir,
            name,
            cwd=cwd,
            env=env,
            bootstrap=adopt_code(env, str(cwd)) + bootstrap,
            spec_name=PRESTARTED,
            provisioner={"provisioner_name": PRESTARTED, "config": config},
            **{"max_message_bytes": self.max_message_bytes, **kw},
        )
        await kernel.start()
        return kernel
