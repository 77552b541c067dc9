"""The ``metrics`` of an agent's ``meta.json``, kept current from the agent's events.

Trainers and evals read ``metrics`` (flat numbers, :class:`rlm.schema.meta.Metrics`) instead
of parsing the log. The agent counts what it does itself (tool calls, cells, summaries,
compactions: it alone sees their arguments); everything the runtime serves it (sub-agents,
``rlm.llm`` calls, host functions, kernel restarts) and the derived numbers (tokens, cost,
wall time) are counted here, from the events every agent emits. ``meta.json`` follows with
the log's usual short delay, and is exact at the agent's end: the final event is counted
before the log closes.
"""

from __future__ import annotations

import time

from rlm.agent import events as ev
from rlm.agent.loop import Agent

__all__ = ["MetricsRecorder", "attach"]


class MetricsRecorder:
    """Counts one agent's events into its ``meta.metrics``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._started = time.monotonic()
        #: Seconds of earlier runs of a resumed session.
        self._earlier = agent.log.meta.metrics.wall_time

    def observe(self, event: ev.Event) -> None:
        if isinstance(event, _UNCOUNTED):  # they change no number: not worth a write
            return
        agent = self.agent
        metrics = agent.log.meta.metrics
        if isinstance(event, ev.ChildSpawned):
            node: Agent | None = agent
            while node is not None:  # a sub-agent counts for every agent above it
                above = node.log.meta.metrics
                above.sub_agents += 1
                above.sub_agents_any = 1
                if node is not agent:
                    node.log.update()
                node = node.parent
        elif isinstance(event, ev.LlmCallFinished):
            metrics.llm_calls += 1
        elif isinstance(event, ev.HostFunctionFinished):
            metrics.host_function_calls += 1
        elif isinstance(event, ev.KernelRestarted):
            metrics.kernel_restarts += 1
        self.refresh()
        agent.log.update()

    def refresh(self) -> None:
        """The numbers derived from the agent's state: turns, tokens, cost, wall time."""
        agent, meta = self.agent, self.agent.log.meta
        metrics = meta.metrics
        own, tree = agent.usage, agent.usage_total
        own_pair = (own.prompt_tokens or 0, own.completion_tokens or 0)
        tree_pair = (tree.prompt_tokens or 0, tree.completion_tokens or 0)
        derived = {
            "turns": meta.turns,
            "prompt_tokens": own_pair[0],
            "completion_tokens": own_pair[1],
            "tokens": sum(own_pair),
            "tree_prompt_tokens": tree_pair[0],
            "tree_completion_tokens": tree_pair[1],
            "tree_tokens": sum(tree_pair),
            "cost": round(meta.cost, 6),
            "tree_cost": round(meta.cost_total, 6),
            "wall_time": round(self._earlier + time.monotonic() - self._started, 3),
        }
        for key, value in derived.items():
            if getattr(metrics, key) != value:  # each assignment is validated: only changes
                setattr(metrics, key, value)


#: Events that change none of the numbers (the next counted one refreshes the derived ones;
#: a ``ToolFinished`` follows the loop's own tool and cell counts, so it writes them).
_UNCOUNTED = (ev.ModelRequest, ev.ModelRetry, ev.ToolStarted, ev.EndpointWarning)


def attach(agent: Agent) -> Agent:
    """Keep ``agent``'s metrics from now on; returns it."""
    agent.observe = MetricsRecorder(agent).observe
    return agent
