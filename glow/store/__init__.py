"""The store: SQLAlchemy tables (derived from `glow.models`), Alembic migrations, queries."""

from glow.store.store import COMPLETABLE, RERUNNABLE, RUNNABLE, TERMINABLE, Store

__all__ = ["COMPLETABLE", "RERUNNABLE", "RUNNABLE", "TERMINABLE", "Store"]
