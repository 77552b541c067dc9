"""A kernel that exits on a plain ``shutdown_request``, zombie children or not.

On a ``shutdown_request`` ipykernel (7) first terminates the children in its process group:
SIGTERM, then SIGKILL, re-checking after each of 0.01, 0.03, 0.1, 0.3, 1, 3 and 10 s until
no child is left. It counts a **zombie** (a child that has exited but was never waited for)
as a child, and signals cannot end what has already ended, so one zombie holds the kernel
for ~29 s before it stops its loops. Whoever asked for the shutdown gives up sooner and kills
it (Kernel Gateway after 5 s, rlm's provisioner path after its grace) or, worse, leaves it.

Zombies are common in rlm kernels: gateway_provisioners' launcher starts its signal listener
as a child that the first SIGTERM ends and nobody reaps (every provisioned kernel has one at
shutdown), and a cell's ``subprocess.Popen`` that was never waited for leaves another. So
the kernel's child list, which ipykernel only uses to terminate children, leaves them out.

A second hold-up is a race in ipykernel itself: once the ``shutdown_request`` handler has
returned, the control thread flushes stdout/stderr and publishes its "idle" status through
the IOPub thread, while the main thread, whose loop the handler stopped, is already closing
that thread. A send into the closed IOPub pipe blocks for good, the main thread waits for the
control thread, and the kernel lives until its client kills it (about 1 run in 3 here; a
gateway's grace is 5 s). After the shutdown reply nothing else needs to reach a client, so
the control thread sends nothing more (:func:`quiet_after_shutdown_reply`).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ignore_zombies_at_shutdown", "quiet_after_shutdown_reply"]


def quiet_after_shutdown_reply(kernel: Any) -> None:
    """After ``kernel`` has handled a ``shutdown_request`` (reply sent, loops told to stop),
    its control thread publishes nothing more: no stream flush, no "idle" status (once per
    kernel; nothing to do for a kernel without control handlers)."""
    handlers = getattr(kernel, "control_handlers", None)
    if not isinstance(handlers, dict):
        return
    original = handlers.get("shutdown_request")
    if original is None or getattr(original, "_rlm_quiet", False):
        return

    async def shutdown_request(stream: Any, ident: Any, parent: Any) -> None:
        await original(stream, ident, parent)
        kernel._publish_status_and_flush = lambda *args, **kwargs: None
        # ``print`` to None writes nothing; the app's close puts the real streams back.
        sys.stdout = sys.stderr = None

    shutdown_request._rlm_quiet = True  # type: ignore[attr-defined]
    handlers["shutdown_request"] = shutdown_request


def ignore_zombies_at_shutdown(kernel: Any) -> None:
    """Leave exited-but-unreaped children out of ``kernel``'s children to terminate (once
    per kernel; nothing to do for an ipykernel without that hook)."""
    original = getattr(kernel, "_process_children", None)
    if original is None or getattr(original, "_rlm_living", False):
        return

    def living_children() -> list[Any]:
        children: list[Any] = list(original())
        if not children:  # also: no psutil, so ipykernel terminates no children at all
            return children
        import psutil  # type: ignore[import-untyped]  # only at shutdown: ipykernel has it

        living = []
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:  # gone meanwhile
                continue
            living.append(child)
        return living

    living_children._rlm_living = True  # type: ignore[attr-defined]
    kernel._process_children = living_children
