"""The kernel class of a forked child: ipykernel's ``IPythonKernel`` without its module list.

``IPythonKernel.__init__`` lists the file of every loaded module for its debugger
(``_kernel_modules``). Forked kernels have no debugger (the zygote preloads ipykernel
without debugpy), so the list is never read, but building it touches every module object,
its name and its ``__file__`` string: in a forked child that copies one to three pages per
module shared with the zygote, ~1.2 MiB per kernel (measured). :class:`ForkedKernel` hides
``sys.modules`` from that one line while ``IPythonKernel.__init__`` runs; everything else is
IPythonKernel's. Imported only in the zygote and its children (it imports ipykernel).
"""

from __future__ import annotations

import sys
from typing import Any

import ipykernel.ipkernel
from ipykernel.ipkernel import IPythonKernel

__all__ = ["ForkedKernel"]


class _SysWithoutModules:
    """``sys`` as ``ipykernel.ipkernel`` sees it during ``IPythonKernel.__init__``: every
    attribute is the real one except ``modules``, which is empty."""

    @property
    def modules(self) -> dict[str, Any]:
        return {}

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)


class ForkedKernel(IPythonKernel):
    """``IPythonKernel`` built without its debugger's module list (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        from ipykernel.debugger import _is_debugpy_available

        if _is_debugpy_available:  # a debugger reads the list: build it as usual
            super().__init__(**kwargs)
            return
        module = ipykernel.ipkernel
        module.sys = _SysWithoutModules()  # type: ignore[assignment]
        try:
            super().__init__(**kwargs)
        finally:
            module.sys = sys
