"""Inputs: Python values handed to an agent's kernel as variables.

Packed on the side that has them (the orchestrator for ``rlm.run(inputs=...)`` and long
messages, a kernel for a sub-agent's inputs) into pickles that travel as control-channel
buffers, and described by name, type and size so the prompt can list them without their
content. Shared by both process sides: no ZeroMQ, no model client.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

from rlm.errors import ConfigError

__all__ = ["Packed", "pack_inputs", "select_inputs"]

#: Descriptions (name, type, size) and the pickles, in the same order.
Packed = tuple[list[dict[str, str]], list[bytes]]


def _describe(value: Any, data: bytes) -> tuple[str, str]:
    kind = type(value).__name__
    try:
        size = f"{len(value):,} items" if not isinstance(value, (str, bytes)) else None
    except TypeError:
        size = None
    if isinstance(value, str):
        size = f"{len(value):,} characters"
    elif isinstance(value, bytes):
        size = f"{len(value):,} bytes"
    return kind, size or f"{len(data):,} bytes pickled"


def pack_inputs(inputs: dict[str, Any] | None) -> tuple[list[dict[str, str]], list[bytes]]:
    """Pickle each input; describe it by name, type and size (the content stays out)."""
    infos, blobs = [], []
    for name, value in (inputs or {}).items():
        if not name.isidentifier():
            raise ConfigError(f"inputs: {name!r} is not a valid Python variable name")
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        kind, size = _describe(value, data)
        infos.append({"name": name, "type": kind, "size": size})
        blobs.append(data)
    return infos, blobs




def select_inputs(packed: Packed, names: Iterable[str] | None) -> Packed:
    """The inputs named in ``names`` (all when None), so a kernel loading one new message
    does not receive every earlier input again."""
    infos, blobs = packed
    if names is None:
        return list(infos), list(blobs)
    wanted = set(names)
    pairs = [(i, b) for i, b in zip(infos, blobs, strict=True) if i["name"] in wanted]
    return [i for i, _ in pairs], [b for _, b in pairs]
