"""The OpenAI SDK, imported in a background thread that starts as early as the CLI can.

Why: ``import openai`` is the largest single import of a run (its package imports every
``openai.types`` model), and nothing needs it until the first model request is built. Started
at process start, the import runs while the main thread imports the rest and while the event
loop waits on the kernel start, and ``ModelClient`` awaits it only when it sends its first
request. Awaiting goes through :func:`asyncio.wrap_future`, so nothing blocks the event loop.

This module imports nothing heavy itself: the CLI starts the preload before its own imports.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from concurrent.futures import Future
from types import ModuleType

__all__ = ["loaded", "openai_module", "preload"]

_lock = threading.Lock()
_future: Future[ModuleType] | None = None


def preload() -> Future[ModuleType]:
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
    return await asyncio.wrap_future(preload())


def loaded() -> ModuleType | None:
    """``openai`` if its import has finished, else None: an exception cannot be one of the
    SDK's before then, so classifying one needs no wait (and never blocks the event loop)."""
    future = _future
    if future is None or not future.done() or future.exception() is not None:
        return None
    return future.result()
