"""Host-function stubs inside a kernel: ``await name(...)`` runs ``name`` in the orchestrator.

The bootstrap calls :func:`install` with each function's name, signature text and docstring
(:mod:`rlm.runtime.functions`); each becomes an ``async def`` of the user namespace whose
``help()`` shows the host function's signature and docstring, and whose call sends a
``function_request`` and returns the JSON result. Validation happens in the orchestrator.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from rlm import inkernel

__all__ = ["call", "install", "show_signature"]


async def call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the host function ``name`` in the orchestrator and return its result."""
    content = {
        "name": name,
        "args": list(args),
        "keywords": kwargs,
        "cell": inkernel._current_cell(),
    }
    reply, _ = await _client().request("function_request", content)
    if reply.get("status") == "ok":
        return reply.get("result")
    raise inkernel._decode_error(reply)


def _client() -> Any:
    from rlm.inkernel.llm import _client as shared

    return shared()


def _stub(name: str, signature: str, doc: str) -> Any:
    async def stub(*args: Any, **kwargs: Any) -> Any:
        return await call(name, args, kwargs)

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = doc or None
    show_signature(stub, name, signature)
    return stub


def show_signature(stub: Any, name: str, signature: str) -> None:
    """Give ``stub`` (``*args, **kwargs``) the signature ``help()`` shows: ``signature``,
    the text the orchestrator sent (host functions, MCP tools)."""
    namespace: dict[str, Any] = {}
    try:  # annotations stay text: the kernel may not have the types
        exec(f"from __future__ import annotations\ndef {name}{signature}: pass", namespace)
        stub.__signature__ = inspect.signature(namespace[name])
    except Exception:  # a default whose repr is not Python: keep (*args, **kwargs)
        pass


def install(specs: str) -> None:
    """Define the stubs of ``specs`` (JSON: ``[{name, signature, doc}]``) for the user."""
    from IPython import get_ipython

    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else {}
    for spec in json.loads(specs):
        namespace[spec["name"]] = _stub(spec["name"], spec["signature"], spec["doc"])
