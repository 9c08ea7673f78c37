"""`run-test`: the benchmark flow. Fan out `run-invocation` over every cell, then `aggregate`.

Give it a test as a pydantic parameter (a form in the Prefect UI) or as a path to a test YAML.
With `test_id` and `resume=True` it continues that test: completed cells are not called again.

All cells run on the flow's event loop: `concurrency` workers pull cells from a queue (so a
10,000-cell test never holds 10,000 coroutines), each cell a `run-invocation` task run; each
model's `max_in_flight` is enforced inside the call. Trace artifacts are posted in the background
and flushed before the end.

Cancelling works even for a test started with `glow run`, which no Prefect runner owns: the flow
watches its own state and, once it reads Cancelling, abandons the in-flight calls, marks every
unfinished invocation terminated, rebuilds the results from what completed, and ends Cancelled.
For deployment runs, whose process the runner kills, the `on_cancellation` hook does the same
bookkeeping from the runner's side.
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# these annotations when a deployment run starts, and string annotations leave it undefined.

import asyncio
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Cancelled

from glow import eventloop, progress
from glow.artifacts import ArtifactPublisher
from glow.budget import Budget
from glow.limits import ensure_provider_limits
from glow.models import Cell, Status, TestSpec, slugify, utcnow
from glow.planning import create_or_resume
from glow.spec import load_test, preflight, resolve_test
from glow.store import Store
from glow.store.store import LeaseHeld
from tasks.aggregate import aggregate, build_results
from tasks.run_invocation import TestContext, register_context, run_invocation

PROGRESS_EVERY_S = 2.0
STATE_POLL_S = 1.0
MAX_LEASE_WAIT_S = 90.0


def _run_name() -> str:
    """Flow runs are named after the test, so the Prefect UI's list reads as a list of tests."""
    params = flow_run.parameters
    test = params.get("test")
    name = test.get("name") if isinstance(test, dict) else getattr(test, "name", None)
    return slugify(f"test-{name or Path(params.get('path') or 'inline').stem}")


def _on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """Runner-side bookkeeping when a deployment run is cancelled (its process was killed)."""
    store = Store.from_settings()
    test_id = store.test_for_flow_run(str(flow_run.id))
    if test_id:
        finish_cancelled(store, test_id)


def finish_cancelled(store: Store, test_id: str) -> None:
    """No invocation left running or queued; results rebuilt from what completed."""
    store.terminate_unfinished(test_id, "the test was cancelled")
    store.update_test(test_id, status="cancelled")
    build_results(store, test_id)


class _Cancelled(Exception):
    """The flow run was cancelled from Prefect (UI or API)."""


async def _watch_state(flow_run_id: str | None, workers: list[asyncio.Task[None]]) -> None:
    """Poll this flow run's state; on Cancelling, cancel the workers (and their calls)."""
    if flow_run_id is None:
        return
    async with get_client() as client:
        while True:
            await asyncio.sleep(STATE_POLL_S)
            try:
                state = (await client.read_flow_run(flow_run_id)).state
            except Exception:  # noqa: BLE001, S112 - the server may blink; keep watching
                continue
            if state is not None and (state.is_cancelling() or state.is_cancelled()):
                for worker in workers:
                    worker.cancel()
                return


async def _run_cells(
    todo: list[Cell], concurrency: int, on_done: Any, budget: Budget | None = None
) -> None:
    queue: asyncio.Queue[Cell] = asyncio.Queue()
    for cell in todo:
        queue.put_nowait(cell)
    waited: set[str] = set()

    async def run_one(cell: Cell) -> str:
        child = asyncio.create_task(run_invocation(cell))
        try:
            return str(await child)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the test is being cancelled
            return "terminated"  # only this cell was terminated

    async def worker() -> None:
        while not queue.empty():
            if budget is not None and budget.exhausted:
                return  # the cells not started stay queued; a resume with more budget runs them
            cell = queue.get_nowait()
            try:
                status = await run_one(cell)
            except LeaseHeld as held:
                # Another runner held this cell (or a dead one whose lease has not run out):
                # wait for the lease once, then try again; a live runner keeps renewing it.
                wait = (held.expires_at.replace(tzinfo=UTC) - utcnow()).total_seconds()
                if wait <= MAX_LEASE_WAIT_S and cell.invocation_id not in waited:
                    waited.add(cell.invocation_id)
                    await asyncio.sleep(max(wait, 0) + 0.5)
                    queue.put_nowait(cell)
                    continue
                status = "held-elsewhere"
            except Exception:  # noqa: BLE001 - a crashed task run must not stop the others
                status = "crashed"
            on_done(status)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)) or 1)]
    flow_ctx = FlowRunContext.get()
    flow_run_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
    watcher = asyncio.create_task(_watch_state(flow_run_id, workers))
    try:
        results = await asyncio.gather(*workers, return_exceptions=True)
    finally:
        watcher.cancel()
    if any(isinstance(r, asyncio.CancelledError) for r in results):
        raise _Cancelled


@flow(
    name="run-test",
    flow_run_name=_run_name,
    log_prints=True,
    on_cancellation=[_on_cancellation],
)
async def run_test(
    test: TestSpec | None = None,
    path: str | None = None,
    test_id: str | None = None,
    resume: bool = False,
) -> Any:
    """Run a benchmark test end to end and return its id, counts and result files."""
    if (test is None) == (path is None):
        raise ValueError("give exactly one of `test` (a test spec) or `path` (a test YAML file)")
    store = Store.from_settings()
    loaded = load_test(path) if path else resolve_test(test)  # type: ignore[arg-type]
    preflight(loaded)
    await ensure_provider_limits(loaded.spec.provider_limits)
    record, plan = create_or_resume(store, loaded, test_id, resume=resume)
    test_id = record.test_id
    publisher = ArtifactPublisher()
    context = TestContext(test_id, loaded, store, publisher=publisher, revision=record.revision)
    register_context(context)
    flow_ctx = FlowRunContext.get()
    flow_run_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
    store.update_test(test_id, status="running", flow_run_id=flow_run_id)

    done_ids = {i.invocation_id for i in store.list_invocations(test_id, status=Status.completed)}
    todo = [c for c in plan if c.invocation_id not in done_ids]
    total, done = len(plan), len(plan) - len(todo)
    logger = get_run_logger()
    logger.info(
        "test %s started: %d cells (%d to run, %d already done, %d skipped for modality), "
        "concurrency %d",
        test_id, total, len(todo), done, len(record.skipped), loaded.spec.concurrency,
    )  # fmt: skip
    milestones = progress.Milestones(total, done)
    progress_id = await acreate_progress_artifact(
        progress=100.0 * done / max(total, 1), key="progress", description=f"cells of {test_id}"
    )
    progress.emit(done, total, "running")
    last_update = time.monotonic()
    pending_updates: set[asyncio.Task[Any]] = set()

    def on_done(status: str) -> None:
        nonlocal done, last_update
        done += 1
        progress.emit(done, total, status)
        if line := milestones.update(done, status):
            logger.info("test %s: %s", test_id, line)
        if time.monotonic() - last_update >= PROGRESS_EVERY_S:
            last_update = time.monotonic()
            update = asyncio.create_task(
                aupdate_progress_artifact(progress_id, progress=100.0 * done / max(total, 1))
            )
            pending_updates.add(update)
            update.add_done_callback(pending_updates.discard)

    try:
        await _run_cells(todo, loaded.spec.concurrency, on_done, context.budget)
    except _Cancelled:
        await publisher.flush()
        await asyncio.to_thread(finish_cancelled, store, test_id)
        print(f"test {test_id} cancelled: unfinished invocations are terminated")
        return Cancelled(message=f"test {test_id} cancelled")
    await publisher.flush()
    await asyncio.gather(*pending_updates, return_exceptions=True)
    await aupdate_progress_artifact(progress_id, progress=100.0 * done / max(total, 1))
    built = await aggregate(test_id)
    status = "completed"
    if context.budget is not None and context.budget.exhausted:
        status = "budget_exhausted"
        store.update_test(test_id, status=status)
        print(
            f"test {test_id}: budget exhausted; "
            f"spent ${context.budget.spent_usd:.4f} of ${context.budget.limit_usd:g}; "
            "cells not started stay queued (raise budget_usd, then resume)"
        )
    else:
        store.update_test(test_id, status="completed")
    return {
        "test_id": test_id,
        "status": status,  # completed or budget_exhausted (the CLI's exit code tells them apart)
        "flow_run_id": flow_run_id,
        # the cells' task runs plus `aggregate`: what the Prefect UI shows once it has caught up
        "task_runs": len(todo) + 1,
        "counts": store.count_invocations(test_id),
        "skipped": len(record.skipped),
        **built,
    }


def run_test_sync(**parameters: Any) -> Any:
    """Run the flow from synchronous code (the CLI, tests)."""
    return eventloop.run(run_test(**parameters))


if __name__ == "__main__":
    import sys

    print(run_test_sync(path=sys.argv[1]))
