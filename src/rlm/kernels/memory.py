"""What a kernel may cost the orchestrator's memory, and who dies when memory runs out.

Kernels run model-written code; the orchestrator owns every agent of the run. A kernel must
not be able to make the orchestrator allocate without bound (one huge message), and when
memory runs out anyway the OOM killer must pick a kernel, which rlm restarts, rather than
the orchestrator.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import zmq
import zmq.utils.monitor

__all__ = ["MAX_MESSAGE_BYTES", "OOM_SCORE_ADJ_OFFSET", "DropCounter", "raise_oom_score"]

#: Largest message part accepted from a kernel by default (``RLM_MAX_MESSAGE_BYTES``). ZeroMQ
#: drops a larger one from its size
#: header, before reading it, and closes that connection: a cell sending a huge message by
#: hand, past the kernel's own output cap, costs the orchestrator nothing (the kernel client
#: notices the drop, tells the model and opens a new IOPub connection).
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
#: How much more likely than the orchestrator a kernel is to be chosen by the OOM killer.
OOM_SCORE_ADJ_OFFSET = 500


def raise_oom_score(pid: int | None) -> None:
    """Make the kernel ``pid`` the OOM killer's choice before the orchestrator: when memory
    runs out, a cell's kernel dies (and is restarted) instead of the process owning every
    agent, log and budget. Raising a score needs no privilege; the kernel's own children
    inherit it. Best effort: no ``/proc`` (not Linux) or a process already gone is fine."""
    if pid is None:
        return
    try:
        own = int(Path("/proc/self/oom_score_adj").read_text())
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(min(own + OOM_SCORE_ADJ_OFFSET, 1000)))
    except (OSError, ValueError):
        pass


#: Numbers the inproc addresses of :class:`DropCounter` monitors.
_MONITORS = itertools.count()


class DropCounter:
    """Counts the drops of one IOPub socket's connection, from a monitor socket: ZeroMQ
    disconnects a kernel whose message is over ``MAX_MESSAGE_BYTES`` and, the size being a
    protocol error, does not reconnect."""

    def __init__(self, socket: zmq.Socket[Any]) -> None:
        self._watched = socket
        # A fresh address each time: libzmq frees a closed monitor's address later, on its
        # own thread, and a new object may have the id of the one just closed.
        address = f"inproc://rlm-iopub-monitor-{next(_MONITORS)}"
        socket.monitor(address, zmq.EVENT_DISCONNECTED)
        # A plain (blocking-API) socket on the same context: polled without awaiting.
        self._context = zmq.Context(shadow=socket.context.underlying)
        self._monitor = self._context.socket(zmq.PAIR)
        self._monitor.connect(address)

    def take(self) -> int:
        """Disconnects seen since the last call."""
        count = 0
        while self._monitor.poll(0):
            frames = self._monitor.recv_multipart()
            if zmq.utils.monitor.parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED:
                count += 1
        return count

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._watched.disable_monitor()
        self._monitor.close(linger=0)
