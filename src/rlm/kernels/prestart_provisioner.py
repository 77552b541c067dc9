"""``rlm-prestarted``: a jupyter_client kernel provisioner that adopts the kernel the CLI
started at process start (:mod:`rlm.kernels.prestart`) instead of launching one.

It is jupyter_client's ``LocalProvisioner`` (signals to the process group, kill, cleanup)
whose ``launch_kernel`` returns the prestarted process and its connection info; the kernel
manager rewrites its connection file from it. Without a prestarted kernel (taken, died) it
launches the command cold, so a kernel always starts.
"""

from __future__ import annotations

import shutil
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from rlm.kernels.prestart import Prestarted

__all__ = ["PROVISIONER_NAME", "PrestartedProvisioner", "hand_over"]

PROVISIONER_NAME = "rlm-prestarted"

#: The kernel the next ``launch_kernel`` adopts (set by the launcher just before the start).
_next: Prestarted | None = None


def hand_over(pre: Prestarted) -> None:
    """Make ``pre`` the kernel the next launch of this provisioner adopts."""
    global _next
    _next = pre


class PrestartedProvisioner(LocalProvisioner):
    """Adopt the prestarted kernel; fall back to a cold start."""

    _folder: str | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        global _next
        pre, _next = _next, None
        if pre is None or pre.process.poll() is not None:
            if pre is not None:
                pre.kill()
            return await super().launch_kernel(cmd, **kwargs)
        self.process = pre.process
        self.pid = pre.process.pid
        self.pgid = pre.process.pid  # started in its own session: it leads its process group
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
