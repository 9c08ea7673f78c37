"""`run-shard`: one share of a test's cells, run by a worker of the work pool.

A `run-test` flow run with `shards: N` submits N flow runs of the `run-shard` deployment; each
maps `run-invocation` over the unfinished cells whose invocation id falls in its share (see
`glow.sharding.shard_of`), with its own task runs and trace artifacts, and writes no parquet: the
parent builds the results once every shard has ended. A cell another runner holds is waited for
until its lease runs out (a dead shard's cells are reclaimed that way), and the store refuses to
start a cell twice.
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from these.

import asyncio
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled

from glow import bundled_simulator
from glow.artifacts import ArtifactPublisher
from glow.context import TestContext, register_context, resolve_record
from glow.errors import NotFound
from glow.models import FINAL_STATUSES, Cell, slugify
from glow.sharding import shard_of
from glow.store import Store


def _run_name() -> str:
    params = flow_run.parameters
    return slugify(f"shard-{params.get('shard')}-of-{params.get('shards')}")


def shard_cells(store: Store, test_id: str, shard: int, shards: int) -> list[Cell]:
    """The unfinished cells of a test that fall in this shard."""
    return [
        Cell.of(inv)
        for inv in store.list_invocations(test_id)
        if inv.status not in FINAL_STATUSES and shard_of(inv.invocation_id, shards) == shard
    ]


@flow(name="run-shard", flow_run_name=_run_name, log_prints=True)
async def run_shard(
    test_id: str, shard: int, shards: int, parent_flow_run_id: str | None = None
) -> Any:
    """Run this shard's cells of test `test_id` (created by its parent `run-test` flow run,
    `parent_flow_run_id`: cancelling the parent cancels this shard)."""
    from flows.run_test import _Cancelled, _run_cells

    if not 0 <= shard < shards:
        raise ValueError(f"shard: {shard} is not in 0..{shards - 1}")
    store = Store.from_settings()
    try:
        record = await asyncio.to_thread(store.get_test, test_id)
    except NotFound:
        raise NotFound(
            f"test {test_id!r} is not in this worker's store ({store.engine.url.render_as_string()}"
            "): every worker of the pool needs the parent's GLOW_DATABASE_URL; the parent runs "
            "this shard's cells itself"
        ) from None
    with bundled_simulator.simulator_for(record.spec_path):
        loaded = resolve_record(record)
        publisher = ArtifactPublisher()
        context = TestContext(test_id, loaded, store, publisher=publisher)
        register_context(context)
        cells = await asyncio.to_thread(shard_cells, store, test_id, shard, shards)
        print(f"test {test_id}: shard {shard} of {shards}: {len(cells)} cells to run")
        statuses: dict[str, int] = {}

        def on_done(status: str) -> None:
            statuses[status] = statuses.get(status, 0) + 1

        try:
            await _run_cells(
                cells, loaded.spec.concurrency, on_done, context.budget, parent_flow_run_id
            )
        except _Cancelled:
            await publisher.flush()
            return Cancelled(message=f"shard {shard} of test {test_id} cancelled")
        await publisher.flush()
    return {"test_id": test_id, "shard": shard, "cells": len(cells), "statuses": statuses}
