"""``rlm-fork``: a jupyter_client kernel provisioner that forks kernels from rlm's zygote.

Selected by the kernelspec's metadata::

    "metadata": {"kernel_provisioner": {"provisioner_name": "rlm-fork",
                                        "config": {"zygote": "<run dir>/zygote.sock",
                                                   "wait_for_zygote": true}}}

It is jupyter_client's ``LocalProvisioner`` (connection file, command line, signals to the
process group, kill, cleanup) with ``launch_kernel`` asking the zygote for a fork instead of
``Popen``. Without a usable zygote (none registered under that path, forking disabled, or any
error) it launches the same command cold, so a kernel always starts.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from traitlets import Bool, Float, Unicode

from rlm.kernels.fork_client import ForkedProcess, ForkError, Zygote

__all__ = ["ForkProvisioner"]


class ForkProvisioner(LocalProvisioner):
    """Launch kernels by forking rlm's zygote; fall back to a cold start."""

    zygote = Unicode("", config=True, help="Unix socket path of the orchestrator's zygote.")
    start_timeout = Float(60.0, config=True, help="Seconds a forked kernel may take to start.")
    wait_for_zygote = Bool(
        True, config=True, help="Wait for a zygote still importing (else start cold meanwhile)."
    )

    #: How the current kernel was started: ``fork`` or ``cold``.
    started_by: str = ""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        zygote = Zygote.lookup(self.zygote)
        if zygote is not None and not self.wait_for_zygote and not zygote.is_ready:
            zygote = None  # still importing: this kernel starts cold, later ones fork
        if zygote is not None and not zygote.disabled:
            reason = _unforkable(cmd)
            if reason:
                zygote.disable(reason)
            else:
                try:
                    return await self._fork(zygote, cmd, kwargs)
                except ForkError as exc:
                    zygote.disable(str(exc))
        self.started_by = "cold"
        return await super().launch_kernel(cmd, **kwargs)

    async def _fork(
        self, zygote: Zygote, cmd: list[str], kwargs: dict[str, Any]
    ) -> KernelConnectionInfo:
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or pathlib.Path.cwd())
        process = await zygote.fork(cmd, env, cwd, timeout=self.start_timeout)
        # ForkedProcess is Popen-like (poll, wait, send_signal, kill): all LocalProvisioner uses
        self.process = process  # type: ignore[assignment]
        self.pid = process.pid
        self.pgid = process.pid  # the child calls setsid(): it leads its own process group
        self.cwd = cwd
        self.started_by = "fork"
        return self.connection_info

    async def wait(self) -> int | None:
        process = self.process
        if isinstance(process, ForkedProcess):
            code = await process.wait_async()
            process.close()
            self.process = None
            return code
        return await super().wait()

    async def cleanup(self, restart: bool = False) -> None:
        process = self.process
        if isinstance(process, ForkedProcess) and process.poll() is not None:
            process.close()
            self.process = None
        await super().cleanup(restart=restart)


def _unforkable(cmd: list[str]) -> str | None:
    """Why ``cmd`` cannot be forked from the zygote (which runs this Python), if it cannot."""
    if cmd[1:3] == ["-m", "rlm.sandbox.launch"]:  # the forked child applies the sandbox
        cmd = [cmd[0], *cmd[3:]]
    if len(cmd) < 3 or cmd[1:3] != ["-m", "ipykernel_launcher"]:
        return f"kernel command is not `python -m ipykernel_launcher ...`: {cmd[:3]}"
    if os.path.realpath(cmd[0]) != os.path.realpath(sys.executable):
        return f"kernel command uses another Python ({cmd[0]})"
    return None
