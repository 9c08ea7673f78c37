"""Splitting a test's cells over shards: flow runs of `run-shard` on a work pool's workers.

Every shard and the parent `run-test` flow run share one store, so the store must be a server
every worker reaches (PostgreSQL through GLOW_DATABASE_URL), not a SQLite file on one machine.
The split is by invocation id, so it is the same in every process and on every retry.
"""

from __future__ import annotations

import hashlib

from glow.errors import SpecError

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
