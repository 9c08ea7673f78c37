"""Splitting a test's cells over shards: flow runs of `run-shard` on a work pool's workers.

Every shard and the parent `run-test` flow run share one store, so the store must be a server
every worker reaches (PostgreSQL through GLOW_DATABASE_URL), not a SQLite file on one machine.
The split is by invocation id, so it is the same in every process and on every retry.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from glow.errors import SpecError

if TYPE_CHECKING:
    from glow.store import Store

SHARD_DEPLOYMENT = "run-shard/shard"
MAX_SHARDS = 256


def shard_of(invocation_id: str, shards: int) -> int:
    """Which of `shards` shards runs this invocation (stable: a hash of the id)."""
    digest = hashlib.sha256(invocation_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def require_shared_store(store_url: str, shards: int) -> None:
    """Refuse sharding on a store other machines' workers cannot share."""
    if shards > 1 and not store_url.startswith("postgresql"):
        raise SpecError(
            f"shards: {shards} shards need a store every worker shares; the store is "
            f"{store_url.split(':', 1)[0]} (a file on one machine). Set GLOW_DATABASE_URL="
            "postgresql+psycopg://user@host/db for the parent and every worker, or set shards: 1"
        )


def abandoned_cells(store: Store, test_id: str) -> list[str]:
    """Running invocations of a test whose runner is gone: its lease ran out, or its process
    (on this machine) no longer exists. A shard with such a cell has died."""
    from sqlalchemy import select

    from glow.models import Status, utcnow
    from glow.store import tables as t
    from glow.store.owner import owner_is_dead

    inv = t.invocations.c
    query = select(inv.invocation_id, inv.lease_owner, inv.lease_expires_at).where(
        inv.test_id == test_id, inv.status == Status.running.value
    )
    now = utcnow()
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        row.invocation_id
        for row in rows
        if row.lease_expires_at is None
        or row.lease_expires_at < now
        or owner_is_dead(row.lease_owner)
    ]
