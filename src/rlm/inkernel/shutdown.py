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
"""

from __future__ import annotations

from typing import Any

__all__ = ["ignore_zombies_at_shutdown"]


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
