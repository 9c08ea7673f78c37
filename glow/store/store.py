"""The ledger of record: tests, invocations, runs (with traces), scores and generations.

Prefect shows what happened; the store is what Glow trusts (Prefect's own record of task runs
drops events under load). `Store` is one object made of the store's parts, one module each:
`tests` and `drafts`, `invocations` (reads) and `pages` (the API's JSON list pages),
`lifecycle` (runs, transitions, leases) and `grading` (scores, generations), all on one
`engine`. Every status change goes through a conditional write (see `glow.store.lifecycle`).
"""

from __future__ import annotations

from glow.store.drafts import Drafts
from glow.store.engine import make_engine, migrate
from glow.store.grading import Grading
from glow.store.lifecycle import (
    COMPLETABLE,
    RERUNNABLE,
    RUNNABLE,
    TERMINABLE,
    LeaseHeld,
    Lifecycle,
)
from glow.store.pages import InvocationPages
from glow.store.tests import DEFINITION, StaleTest, Tests

__all__ = [
    "COMPLETABLE",
    "DEFINITION",
    "RERUNNABLE",
    "RUNNABLE",
    "TERMINABLE",
    "LeaseHeld",
    "StaleTest",
    "Store",
    "make_engine",
    "migrate",
]


class Store(Tests, Drafts, InvocationPages, Lifecycle, Grading):
    """All reads and writes of Glow's records. Thread-safe; one per process is enough."""

    @classmethod
    def from_settings(cls) -> Store:
        """The store named by Glow's settings (`store_url`)."""
        from glow.settings import get_settings

        return cls(get_settings().store_url)
