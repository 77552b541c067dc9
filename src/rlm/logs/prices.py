"""The optional price table behind the cost columns: ``RLM_PRICES``.

``RLM_PRICES`` is a JSON object, or the path of a file holding one, mapping a model name to
its dollar prices per million tokens: ``{"gpt-4o": {"prompt": 2.5, "completion": 10}}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rlm.logs.store import AgentNode, SessionError

__all__ = ["Prices", "agent_cost", "load_prices", "tree_cost"]

Prices = dict[str, tuple[float, float]]


def load_prices(value: str | None = None) -> Prices | None:
    """The table from ``value`` (default: ``$RLM_PRICES``); ``None`` when unset."""
    value = os.environ.get("RLM_PRICES") if value is None else value
    if value is None or not value.strip():
        return None
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = Path(value).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise SessionError(
                f"RLM_PRICES: cannot read {value!r}: {exc.strerror or exc}"
            ) from None
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise SessionError(f"RLM_PRICES: not valid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise SessionError("RLM_PRICES: expected a JSON object {model: {prompt, completion}}")
    prices: Prices = {}
    for model, entry in table.items():
        prompt = entry.get("prompt") if isinstance(entry, dict) else None
        completion = entry.get("completion") if isinstance(entry, dict) else None
        if not all(_number(v) for v in (prompt, completion)):
            raise SessionError(
                f'RLM_PRICES: {model!r} needs numeric "prompt" and "completion" prices '
                "($ per 1M tokens)"
            )
        prices[str(model)] = (float(prompt), float(completion))  # type: ignore[arg-type]
    return prices


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def agent_cost(node: AgentNode, prices: Prices) -> float | None:
    """Dollars of the agent's own tokens; ``None`` when its model has no price."""
    price = prices.get(node.model)
    if price is None:
        return None
    prompt, completion = node.usage()
    return (prompt * price[0] + completion * price[1]) / 1_000_000


def tree_cost(node: AgentNode, prices: Prices) -> tuple[float, bool]:
    """Dollars of the whole subtree (each agent at its own model's price), and whether
    every agent that used tokens had a price."""
    total, complete = 0.0, True
    for agent in node.walk():
        cost = agent_cost(agent, prices)
        if cost is None:
            complete = complete and agent.usage() == (0, 0)
        else:
            total += cost
    return total, complete
