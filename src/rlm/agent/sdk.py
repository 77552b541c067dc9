"""The OpenAI SDK, imported only when a model request fails, in a thread, off the event loop.

Why: requests go out without the SDK (:mod:`rlm.agent.transport`), and ``import openai`` is
the largest single import of a run (its package imports every ``openai.types`` model: ~0.5 s
of CPU, ~30 MiB). It is still the error contract: a failed request raises the SDK's own
exception, so the transport awaits the import here first. The import runs in a daemon thread
and is awaited through :func:`asyncio.wrap_future`, so the event loop keeps serving the other
agents meanwhile; a successful run never imports it.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from concurrent.futures import Future
from types import ModuleType

__all__ = ["loaded", "openai_module", "start_import"]

_lock = threading.Lock()
_future: Future[ModuleType] | None = None


def start_import() -> Future[ModuleType]:
    """Start importing ``openai`` in a daemon thread (once per process); its future."""
    global _future
    with _lock:
        if _future is None:
            future: Future[ModuleType] = Future()

            def work() -> None:
                try:
                    future.set_result(importlib.import_module("openai"))
                except BaseException as exc:  # re-raised where the SDK is awaited
                    future.set_exception(exc)

            threading.Thread(target=work, name="rlm-import-openai", daemon=True).start()
            _future = future
        return _future


async def openai_module() -> ModuleType:
    """The ``openai`` module, once its import (started now if it was not yet) has finished."""
    return await asyncio.wrap_future(start_import())


def loaded() -> ModuleType | None:
    """``openai`` if its import (:func:`openai_module`) has finished, else None: an exception
    cannot be one of the SDK's before then, so classifying one needs no wait (and never blocks
    the event loop)."""
    future = _future
    if future is None or not future.done() or future.exception() is not None:
        return None
    return future.result()
