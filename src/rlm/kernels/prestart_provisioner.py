"""``rlm-prestarted``: a jupyter_client kernel provisioner that adopts the kernel the CLI
started at process start (:mod:`rlm.kernels.prestart`) instead of launching one.

It is rlm's fork provisioner (:class:`~rlm.kernels.fork_provisioner.ForkProvisioner`: signals
to the process group, kill, cleanup, a forked kernel's exit status) whose ``launch_kernel``
returns the prestarted process, cold or forked from the prestarted zygote, and its connection
info; the kernel manager rewrites its connection file from it. Without a prestarted kernel
(taken, died, its fork failed) it launches the command as the fork provisioner does (a fork
when its configured zygote is ready, else cold), so a kernel always starts.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from jupyter_client.connect import KernelConnectionInfo

from rlm.kernels.fork_client import ForkedProcess
from rlm.kernels.fork_provisioner import ForkProvisioner
from rlm.kernels.prestart import Forked, Prestarted

__all__ = ["PROVISIONER_NAME", "PrestartedProvisioner", "hand_over"]

PROVISIONER_NAME = "rlm-prestarted"

#: The kernel the next ``launch_kernel`` adopts (set by the launcher just before the start).
_next: Prestarted | None = None


def hand_over(pre: Prestarted) -> None:
    """Make ``pre`` the kernel the next launch of this provisioner adopts."""
    global _next
    _next = pre


class PrestartedProvisioner(ForkProvisioner):
    """Adopt the prestarted kernel; fall back to a fork or a cold start."""

    _folder: str | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        global _next
        pre, _next = _next, None
        if pre is not None and isinstance(pre.process, Forked):
            # the prestart's thread may still be asking the zygote for it
            await asyncio.to_thread(pre.process.done.wait, self.start_timeout)
        if pre is None or pre.process.poll() is not None:
            if pre is not None:
                pre.kill()
            return await super().launch_kernel(cmd, **kwargs)
        if isinstance(pre.process, Forked):
            assert pre.process.pid is not None and pre.process.sock is not None
            sock, pre.process.sock = pre.process.sock, None
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            self.process = ForkedProcess(pre.process.pid, reader, writer)  # type: ignore[assignment]
            self.started_by = "fork"
        else:
            self.process = pre.process
            self.started_by = "cold"
        self.pid = pre.process.pid
        self.pgid = self.pid  # started in its own session: it leads its process group
        self._folder = pre.folder
        info = dict(pre.connection)
        info["key"] = info["key"].encode()
        self.connection_info = info  # type: ignore[assignment]
        return self.connection_info

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if self._folder is not None and not restart:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
