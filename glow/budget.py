"""A test's spending limit (`budget_usd`), shared by all its concurrent cells.

Checked before every model or judge call starts and charged when one answers, so once the
budget is spent no new call begins; the overshoot is bounded by the calls already in flight.
"""

from __future__ import annotations

import threading

from glow.errors import BudgetExhausted


class Budget:
    """Spent and remaining USD of one test; thread-safe (API runs may use other threads)."""

    def __init__(self, limit_usd: float, spent_usd: float = 0.0) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self._lock = threading.Lock()

    @property
    def exhausted(self) -> bool:
        return self.spent_usd >= self.limit_usd

    def charge(self, cost_usd: float | None) -> None:
        if cost_usd:
            with self._lock:
                self.spent_usd += cost_usd

    def check(self) -> None:
        """Raise BudgetExhausted if no new call may start."""
        if self.exhausted:
            raise BudgetExhausted(
                f"the test's budget of ${self.limit_usd:g} is spent (${self.spent_usd:.4f}); "
                "raise budget_usd and resume the test to run the remaining cells"
            )
