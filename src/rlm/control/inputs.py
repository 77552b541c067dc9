"""Inputs: Python values handed to an agent's kernel as variables.

Packed on the side that has them (the orchestrator for ``rlm.run(inputs=...)`` and long
messages, a kernel for a sub-agent's inputs) into pickles that travel as control-channel
buffers, and described by name, type and size so the prompt can list them without their
content. Shared by both process sides: no ZeroMQ, no model client.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError
from rlm.safeio import read_regular

__all__ = ["SPILL_BYTES", "Packed", "Spilled", "pack_inputs", "select_inputs", "spill_inputs"]

#: Pickles larger than this leave the orchestrator's memory for a file once sent to their
#: kernel (a 1 GiB ``--input`` would otherwise stay resident for the whole run).
SPILL_BYTES = 1 << 20


@dataclass(frozen=True)
class Spilled:
    """A pickle kept in a file of the private run directory, read back only when its
    kernel restarts and loads the inputs again."""

    path: Path
    size: int

    def read(self) -> bytes:
        return read_regular(self.path, self.size)


#: Descriptions (name, type, size) and the pickles (or their files), in the same order.
Packed = tuple[list[dict[str, str]], list[bytes | Spilled]]


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


def pack_inputs(inputs: dict[str, Any] | None) -> Packed:
    """Pickle each input; describe it by name, type and size (the content stays out)."""
    infos: list[dict[str, str]] = []
    blobs: list[bytes | Spilled] = []
    for name, value in (inputs or {}).items():
        if not name.isidentifier():
            raise ConfigError(f"inputs: {name!r} is not a valid Python variable name")
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        kind, size = _describe(value, data)
        infos.append({"name": name, "type": kind, "size": size})
        blobs.append(data)
    return infos, blobs


def select_inputs(
    packed: Packed, names: Iterable[str] | None
) -> tuple[list[dict[str, str]], list[bytes]]:
    """The inputs named in ``names`` (all when None), so a kernel loading one new message
    does not receive every earlier input again. Spilled pickles are read back (blocking:
    call it in a thread)."""
    infos, blobs = packed
    wanted = None if names is None else set(names)
    pairs = [
        (i, b) for i, b in zip(infos, blobs, strict=True) if wanted is None or i["name"] in wanted
    ]
    return [i for i, _ in pairs], [b.read() if isinstance(b, Spilled) else b for _, b in pairs]


def spill_inputs(packed: Packed, folder: Path) -> None:
    """Move the pickles over ``SPILL_BYTES`` of ``packed`` into private files in ``folder``
    (in place: the list then holds :class:`Spilled` entries and the bytes can be freed).
    Called once a kernel has been sent its inputs; a later reload reads the files. A
    pickle that cannot be written stays in memory (the run goes on, only bigger)."""
    blobs = packed[1]
    for index, blob in enumerate(blobs):
        if isinstance(blob, Spilled) or len(blob) <= SPILL_BYTES:
            continue
        name = None
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix="input-", suffix=".pickle")  # 0600
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
        except OSError:
            if name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(name)
            continue
        blobs[index] = Spilled(Path(name), len(blob))
