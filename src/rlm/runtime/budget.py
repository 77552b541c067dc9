"""The run's cost budget: ``RLM_MAX_COST`` dollars for the whole tree of agents.

Every token any agent of the run is billed for (its own model turns and its cells'
``rlm.llm`` calls) reaches :meth:`Agent.add_usage`, which asks the host to :meth:`charge` it:
the meter prices it with the ``RLM_PRICES`` table and adds it to the run's spend, one place
for the whole tree. The orchestrator checks the spend before each new model request, each
``rlm.llm`` call and each sub-agent start (:meth:`check`); requests already on the wire finish
and are counted, so the spend may end a little above the budget (by at most the calls that
were in flight when it was crossed).

A budget needs a price for every model it will pay for, so the meter refuses at start (and
at a sub-agent or ``rlm.llm`` call naming another model) when the table has none: a budget
that cannot be counted would silently never stop anything.
"""

from __future__ import annotations

from rlm.agent.reply import Usage
from rlm.config import Settings
from rlm.errors import AgentError, ConfigError
from rlm.logs.prices import Prices, load_prices
from rlm.logs.store import SessionError
from rlm.schema import StopReason

__all__ = ["CostMeter"]


class CostMeter:
    """Prices usage and keeps the run's spend against ``RLM_MAX_COST``."""

    def __init__(self, settings: Settings) -> None:
        self.limit = settings.max_cost
        try:
            self.prices: Prices = load_prices() or {}
        except SessionError as exc:
            if self.limit:  # a budget cannot be counted without the table
                raise ConfigError(str(exc)) from None
            self.prices = {}  # without a budget the table only feeds the cost columns
        self.spent = 0.0
        """Dollars of every priced model call this run, finished calls only."""
        self.require_price(settings.model)

    def require_price(self, model: str) -> None:
        """With a budget, a model without a price cannot be used (``ConfigError``)."""
        if self.limit and model not in self.prices:
            raise ConfigError(
                f"RLM_MAX_COST: RLM_PRICES has no price for model {model!r}; add "
                f'{{"{model}": {{"prompt": ..., "completion": ...}}}} ($ per 1M tokens)'
            )

    def charge(self, model: str, usage: Usage) -> float:
        """The dollars of one call's usage (0 when the model has no price), added to the
        run's spend."""
        price = self.prices.get(model)
        if price is None:
            return 0.0
        cost = (
            (usage.prompt_tokens or 0) * price[0] + (usage.completion_tokens or 0) * price[1]
        ) / (1_000_000)
        self.spent += cost
        return cost

    def check(self, what: str = "model request") -> None:
        """Raise ``AgentError(reason=cost_budget)`` when the budget is spent."""
        if self.limit and self.spent >= self.limit:
            raise AgentError(
                f"cost budget of ${self.limit:g} spent (${self.spent:.6f} so far, RLM_MAX_COST): "
                f"no new {what}",
                reason=StopReason.COST_BUDGET,
            )
