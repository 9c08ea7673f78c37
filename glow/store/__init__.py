"""The store: SQLAlchemy tables (derived from `glow.models`), Alembic migrations, queries."""

from glow.store.lifecycle import COMPLETABLE, RERUNNABLE, RUNNABLE, TERMINABLE, LeaseHeld
from glow.store.store import Store
from glow.store.tests import StaleTest

__all__ = ["COMPLETABLE", "RERUNNABLE", "RUNNABLE", "TERMINABLE", "LeaseHeld", "StaleTest", "Store"]
