"""What waits for a sub-agent slot, bounded.

A ``run_request`` that finds every slot of its depth taken waits, and its input buffers wait
with it in the orchestrator's memory. Unbounded, a cell that fires many ``rlm.run`` calls
sharing one large input multiplies it (ten queued requests with a 300 MB input took the
orchestrator from 71 MB to 5 GB). :class:`PendingRequests` admits a waiting request only
while the agent's queue (``RLM_MAX_PENDING_RUNS``) and the run's total of waiting input
bytes (``RLM_MAX_PENDING_BYTES``) stay within their limits; beyond, the request's cell gets
a ``ConfigError`` at once and its buffers are released.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rlm.config import Settings
from rlm.errors import ConfigError

__all__ = ["PendingRequests"]


def _mb(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB"


class PendingRequests:
    """Run requests of one orchestrator waiting for a slot: their count per agent and the
    total size of their input buffers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bytes = 0
        self.runs: Counter[str] = Counter()

    @contextmanager
    def waiting(self, agent_id: str, agent: Settings, buffers: Sequence[bytes]) -> Iterator[None]:
        """Count the request while the block runs; ``ConfigError`` if it does not fit."""
        size = sum(len(buf) for buf in buffers)
        if self.runs[agent_id] >= agent.max_pending_runs:
            raise ConfigError(
                f"sub-agent refused: {self.runs[agent_id]} sub-agents of this agent already wait "
                f"for a slot (RLM_MAX_PENDING_RUNS={agent.max_pending_runs}); start fewer at once"
            )
        limit = self.settings.max_pending_bytes
        if self.bytes + size > limit:
            raise ConfigError(
                f"sub-agent refused: its inputs ({_mb(size)}) would take the inputs waiting for "
                f"a slot to {_mb(self.bytes + size)}, over RLM_MAX_PENDING_BYTES={limit} "
                f"({_mb(limit)}); start fewer sub-agents at once or pass smaller inputs"
            )
        self.runs[agent_id] += 1
        self.bytes += size
        try:
            yield
        finally:
            self.bytes -= size
            self.runs[agent_id] -= 1
            if not self.runs[agent_id]:
                del self.runs[agent_id]
