"""A test's spending limit (`budget_usd`), shared by all its concurrent cells.

Checked before every model or judge call starts and charged when one answers, so once the
budget is spent no new call begins; the overshoot is bounded by the calls already in flight.

What a resumed (or regraded) test has already spent is the sum of its stored generations:
every model and judge call ever paid for, including earlier runs of re-run cells and late runs
that were discarded, not just the cost of each invocation's latest run.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from glow.errors import BudgetExhausted

if TYPE_CHECKING:
    from glow.store import Store


def spent_usd(store: Store, test_id: str) -> float:
    """USD a test has spent so far: the known costs of all its generations (an unknown price
    counts nothing; a test with a budget refuses unpriced models up front)."""
    from sqlalchemy import func, select

    from glow.store import tables as t

    query = select(func.coalesce(func.sum(t.generations.c.cost_usd), 0.0)).where(
        t.generations.c.test_id == test_id
    )
    with store.engine.connect() as conn:
        return float(conn.execute(query).scalar_one())


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
