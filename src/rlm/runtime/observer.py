"""Delivering events to the user's ``on_event`` callback without letting it hurt the run.

A plain function is called at once (it must be quick: every agent of the run shares the
event loop it runs on). An ``async def`` callback is awaited too: its coroutines go to a
queue drained by one task, in order, so a slow observer never blocks the agents, and
the run waits for what is queued (a bounded time) when it ends. A callback that raises is
logged and ignored: observing a run never breaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from rlm.agent.events import Event, EventCallback

__all__ = ["Observer"]

log = logging.getLogger("rlm.runtime.observer")

#: Seconds the end of a run waits for an async observer to take the last events.
DRAIN_TIMEOUT = 5.0


class Observer:
    """Wraps ``on_event``; ``emit`` never raises and never blocks on an async callback."""

    def __init__(self, callback: EventCallback | None) -> None:
        self.callback = callback
        self._queue: asyncio.Queue[Awaitable[Any]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        if self.callback is None:
            return
        try:
            result = self.callback(event)
        except Exception:
            log.warning("on_event callback failed on %s; ignored", event.kind, exc_info=True)
            return
        if inspect.isawaitable(result):
            self._enqueue(result, event)

    def _enqueue(self, awaitable: Awaitable[Any], event: Event) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop (a sync caller): nothing can await it
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            log.warning("async on_event callback outside an event loop; %s dropped", event.kind)
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._drain(), name="rlm-observer")
        self._queue.put_nowait(awaitable)

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            awaitable = await self._queue.get()
            try:
                await awaitable
            except Exception:
                log.warning("async on_event callback failed; ignored", exc_info=True)
            finally:
                self._queue.task_done()

    async def aclose(self) -> None:
        """Let an async callback take what is queued (at most ``DRAIN_TIMEOUT`` s)."""
        worker, queue = self._worker, self._queue
        self._worker = self._queue = None
        if worker is None or queue is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(queue.join(), DRAIN_TIMEOUT)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
