"""`run-invocation-flow`: run (or re-fire) one invocation, then rebuild its test's results.

The HTTP API's `invocation_run` starts this flow, so a single invocation shows up in the Prefect
UI like a test does: a flow run with one `run-invocation` task run, the trace artifact, and the
refreshed leaderboard. The API opens the run in the store first (so it can answer with the run
id, or 409, at once) and passes its id here.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Cancelled

from glow import bundled_simulator
from glow.context import fresh_context
from glow.models import Cell, Status, slugify
from glow.results.build import rebuild_results
from glow.store import Store
from tasks.aggregate import publish
from tasks.run_invocation import run_invocation


def _run_name() -> str:
    params = flow_run.parameters
    return slugify(f"invocation-{str(params.get('invocation_id', ''))[:8]}")


@flow(name="run-invocation-flow", flow_run_name=_run_name, log_prints=True)
async def run_invocation_flow(invocation_id: str, run_id: str | None = None) -> Any:
    """Run one invocation (the run `run_id` if the API opened one) and rebuild the results."""
    store = Store.from_settings()
    inv = await asyncio.to_thread(store.get_invocation, invocation_id, runs=False)
    record = await asyncio.to_thread(store.get_test, inv.test_id)
    with ExitStack() as stack:
        # A test on the bundled simulator gets one for the length of this flow run.
        sim = bundled_simulator.simulator_for(record.spec_path)
        url = await asyncio.to_thread(stack.enter_context, sim)
        ctx = await asyncio.to_thread(fresh_context, inv.test_id, store, url is not None)
        cell = Cell.of(inv)
        state = await run_invocation(cell, run_id=run_id, return_state=True)
    built = await asyncio.to_thread(rebuild_results, ctx.store, inv.test_id)
    await publish(built)
    final = await asyncio.to_thread(store.get_invocation, invocation_id, runs=False)
    print(f"invocation {invocation_id}: {final.status.value}")
    if state.is_cancelled() or final.status is Status.terminated:
        # Terminated through the API: the flow run reads Cancelled in the UI, like its task run.
        return Cancelled(message=f"invocation {invocation_id} was terminated")
    return {"invocation_id": invocation_id, "run_id": run_id, "status": final.status.value}
