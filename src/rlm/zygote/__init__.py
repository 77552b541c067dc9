"""Fork-started kernels: real ipykernels forked from a pre-imported "zygote" process.

A cold kernel is a fresh ``python -m ipykernel_launcher``: about half a second of CPU, mostly
imports. The zygote is a child of the orchestrator that has imported everything a live kernel
uses (ipykernel, IPython, jupyter_client's session, rlm's kernel side and the
``RLM_PRELOAD`` modules), then ran ``gc.freeze()`` and waits on a unix socket in the
orchestrator's private run directory. It has no zmq context, no threads and no event loop, so
``fork()`` is safe; each forked child becomes an ordinary ipykernel on the connection file
jupyter_client wrote (``IPKernelApp.initialize`` + ``start``), with the agent's environment and
working directory, in a session of its own. Imported modules are shared copy-on-write.

The seam is jupyter_client's kernel provisioner interface: the run directory's ``rlm-fork``
kernelspec names :class:`~rlm.kernels.fork_provisioner.ForkProvisioner` (entry point
``jupyter_client.kernel_provisioners``), a ``LocalProvisioner`` whose ``launch_kernel`` asks the
zygote instead of ``Popen``. Interrupt (SIGINT to the kernel's process group), kill, restart
(a restart forks again), ``is_alive`` and the exit code all keep working: the zygote reaps its
children and reports each exit status over the socket the kernel was requested on. On any
failure the provisioner starts that kernel cold and forking is switched off for the rest of
the run, with one log line saying why.

The zygote is started only when a run may spawn sub-agents: by the CLI at process start
(:mod:`rlm.kernels.prestart`, which also asks it for the root kernel as soon as it is ready;
the launcher adopts both), else by :class:`rlm.kernels.launcher.KernelLauncher`. Sub-agent
kernels wait for it to be ready; a root kernel the launcher starts itself does not (it starts
cold while the zygote is still importing).

Lifetime: the zygote gets ``PR_SET_PDEATHSIG`` (SIGTERM) so it dies with the orchestrator and
then kills its kernels' process groups; every kernel gets ``PR_SET_PDEATHSIG`` (SIGKILL) for the
zygote plus ipykernel's parent poller on the zygote's pid (its real parent), and a kernel whose
request socket is closed by the orchestrator side is killed too.
"""

from __future__ import annotations

import os
import sys

__all__ = ["PROVISIONER_NAME", "fork_supported", "preload_modules"]

#: Entry-point name of the provisioner in ``jupyter_client.kernel_provisioners``.
PROVISIONER_NAME = "rlm-fork"

#: Modules a live rlm kernel imports (measured: a cold kernel after the bootstrap and one
#: ``!cmd``), imported by the zygote before it forks anything.
CORE_MODULES: tuple[str, ...] = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",  # imported without debugpy: forked kernels have no debugger
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.core.logger",
    "IPython.extensions.storemagic",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "jupyter_client.session",
    "pexpect",
    "faulthandler",
    "rlm",
    "rlm.inkernel",
    "rlm.control.channel",
)

#: Heavy modules preloaded when installed and ``RLM_PRELOAD`` is not set.
DEFAULT_PRELOAD: tuple[str, ...] = ("numpy", "pandas")


def fork_supported() -> bool:
    """Forking a zygote needs Linux (``prctl``) and ``os.fork``."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def preload_modules(environ: dict[str, str] | None = None) -> list[str]:
    """The extra modules the zygote imports: ``RLM_PRELOAD`` (comma separated) or the
    defaults; modules that are not installed are skipped by the zygote."""
    source = os.environ if environ is None else environ
    raw = source.get("RLM_PRELOAD")
    names = DEFAULT_PRELOAD if raw is None else raw.split(",")
    return [name.strip() for name in names if name.strip()]
