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
from contextlib import ExitStack
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
from prefect.context import FlowRunContext
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Cancelled, Cancelling, Crashed
from pydantic import Field

from glow import bundled_simulator, eventloop, progress
from glow.artifacts import ArtifactPublisher
from glow.budget import Budget
from glow.context import TestContext, register_context
from glow.errors import SpecError
from glow.limits import ensure_provider_limits
from glow.models import FINAL_STATUSES, Cell, Status, TestSpec, slugify, utcnow
from glow.planning import create_or_resume
from glow.results.build import build_results
from glow.settings import get_settings
from glow.sharding import SHARD_DEPLOYMENT, abandoned_cells, require_shared_store, shard_of
from glow.spec import load_test, preflight, resolve_test
from glow.store import Store
from glow.store.store import LeaseHeld
from tasks.aggregate import aggregate
from tasks.run_invocation import run_invocation

PROGRESS_EVERY_S = 2.0
STATE_POLL_S = 1.0
MAX_LEASE_WAIT_S = 90.0
SHARD_POLL_S = 2.0


def _run_name() -> str:
    """Flow runs are named after the test, so the Prefect UI's list reads as a list of tests."""
    params = flow_run.parameters
    test = params.get("test")
    name = test.get("name") if isinstance(test, dict) else getattr(test, "name", None)
    return slugify(f"test-{name or Path(params.get('path') or 'inline').stem}")


def _on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """Runner-side bookkeeping when a deployment run is cancelled (its process was killed)."""
    try:
        cancel_shards(str(flow_run.id))
    except Exception as exc:  # noqa: BLE001 - the store's bookkeeping below must still happen
        print(f"could not cancel the shards of flow run {flow_run.id}: {exc}")
    store = Store.from_settings()
    test_id = store.test_for_flow_run(str(flow_run.id))
    if test_id:
        finish_cancelled(store, test_id)


def _shard_tag(parent_flow_run_id: str) -> str:
    return f"glow-parent-{parent_flow_run_id}"


def cancel_shards(parent_flow_run_id: str) -> int:
    """Set every unfinished `run-shard` flow run of a parent Cancelling; return how many.

    Their workers then stop them the way the UI's Cancel does. Shards are found by the tag the
    parent gave them, so this works from the runner's side too (the cancellation hook).
    """
    from prefect.client.orchestration import get_client as get_sync_client

    tag = _shard_tag(parent_flow_run_id)
    cancelled = 0
    with get_sync_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
        )
        for run in runs:
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, state=Cancelling(), force=True)
                cancelled += 1
    return cancelled


def finish_cancelled(store: Store, test_id: str) -> None:
    """No invocation left running or queued; results rebuilt from what completed."""
    store.terminate_unfinished(test_id, "the test was cancelled")
    store.update_test(test_id, status="cancelled")
    build_results(store, test_id)


class _Cancelled(Exception):
    """The flow run was cancelled from Prefect (UI or API)."""


async def _watch_state(
    flow_run_id: str | None, workers: list[asyncio.Task[None]], parent_id: str | None = None
) -> None:
    """Poll this flow run's state, and a shard's parent's; on Cancelling, cancel the workers (and
    their calls). A shard watches its parent too: the parent's own cancelling of its shards runs
    in a process its worker is killing, so it may never happen."""
    watched = [run_id for run_id in (flow_run_id, parent_id) if run_id]
    if not watched:
        return
    async with get_client() as client:
        while True:
            await asyncio.sleep(STATE_POLL_S)
            for run_id in watched:
                try:
                    state = (await client.read_flow_run(run_id)).state
                except Exception:  # noqa: BLE001, S112 - the server may blink; keep watching
                    continue
                if state is not None and (state.is_cancelling() or state.is_cancelled()):
                    for worker in workers:
                        worker.cancel()
                    return


async def _run_cells(
    todo: list[Cell],
    concurrency: int,
    on_done: Any,
    budget: Budget | None = None,
    parent_id: str | None = None,
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
    watcher = asyncio.create_task(_watch_state(flow_run_id, workers, parent_id))
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
    shards: Annotated[int, Field(ge=1, le=256)] | None = None,
) -> Any:
    """Run a benchmark test end to end and return its id, counts and result files.

    `shards` (or the test's own `shards:`) > 1 runs the cells as that many `run-shard` flow
    runs on the work pool's workers; the store must then be PostgreSQL.
    """
    if (test is None) == (path is None):
        raise ValueError("give exactly one of `test` (a test spec) or `path` (a test YAML file)")
    with ExitStack() as stack:
        # A test on the bundled simulator gets one for the length of this flow run.
        await asyncio.to_thread(stack.enter_context, bundled_simulator.simulator_for(path))
        return await _run_test(test, path, test_id, resume, shards)


async def _run_test(
    test: TestSpec | None, path: str | None, test_id: str | None, resume: bool, shards: int | None
) -> Any:
    store = Store.from_settings()
    loaded = load_test(path) if path else resolve_test(test)  # type: ignore[arg-type]
    preflight(loaded)
    n_shards = shards or loaded.spec.shards
    require_shared_store(get_settings().store_url, n_shards)
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
        if n_shards > 1 and todo:
            await _run_shards(store, test_id, n_shards, flow_run_id, on_done)
            # Cells a shard left unstarted (its flow run failed or was cancelled alone, or its
            # worker died): run here; a dead runner's lease is waited out, never doubled.
            todo = await asyncio.to_thread(_left_by_shards, store, test_id)
            if todo:
                print(f"test {test_id}: {len(todo)} cells left by the shards run here")
        if todo:
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


async def _run_shards(
    store: Store, test_id: str, shards: int, flow_run_id: str | None, on_done: Any
) -> None:
    """Submit `shards` runs of the `run-shard` deployment and wait for them all to end.

    Cancelling this flow run cancels them. `on_done` is called once per cell that ended since
    the last poll, so the progress bar and artifact move while the shards work.
    """
    if flow_run_id is None:
        raise SpecError("shards: a sharded test runs as a Prefect flow run (no flow run here)")
    tags = ["glow", "shard", _shard_tag(flow_run_id)]
    # Cells left running by an earlier, dead run are the shards' to reclaim, not a sign of death.
    stale = set(await asyncio.to_thread(abandoned_cells, store, test_id))
    try:
        runs = [
            await arun_deployment(
                SHARD_DEPLOYMENT,
                parameters={
                    "test_id": test_id,
                    "shard": i,
                    "shards": shards,
                    "parent_flow_run_id": flow_run_id,
                },
                timeout=0,
                tags=tags,
            )
            for i in range(shards)
        ]
    except ObjectNotFound:
        raise SpecError(
            f"shards: no deployment {SHARD_DEPLOYMENT!r}; deploy it with the run-test one "
            "(`prefect deploy --all --prefect-file deployments/prefect.yaml`, or serve.py)"
        ) from None
    print(f"test {test_id}: submitted {shards} run-shard flow runs")
    ids = [run.id for run in runs]
    taken_over: set[int] = set()
    seen = sum(store.count_invocations(test_id).get(s.value, 0) for s in FINAL_STATUSES)
    async with get_client() as client:
        try:
            while True:
                await asyncio.sleep(SHARD_POLL_S)
                me = (await client.read_flow_run(flow_run_id)).state
                if me is not None and (me.is_cancelling() or me.is_cancelled()):
                    raise _Cancelled
                counts = await asyncio.to_thread(store.count_invocations, test_id)
                ended = sum(counts.get(s.value, 0) for s in FINAL_STATUSES)
                for _ in range(max(ended - seen, 0)):
                    on_done("completed")
                seen = max(seen, ended)
                dead_shards = await asyncio.to_thread(_dead_shards, store, test_id, shards, stale)
                for dead in dead_shards:
                    if dead not in taken_over:
                        # Its runner died (a killed worker leaves its flow run Running in
                        # Prefect): say so there, and take its cells over once it ends.
                        taken_over.add(dead)
                        print(f"test {test_id}: shard {dead}'s runner died; taking its cells")
                        await client.set_flow_run_state(
                            ids[dead],
                            state=Crashed(message="its runner died; the parent runs its cells"),
                            force=True,
                        )
                children = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
                )
                if all(c.state is not None and c.state.is_final() for c in children):
                    bad = [c.name for c in children if not c.state.is_completed()]
                    if bad:
                        print(f"test {test_id}: shards that did not complete: {', '.join(bad)}")
                    return
        except (_Cancelled, asyncio.CancelledError):
            await asyncio.to_thread(cancel_shards, flow_run_id)
            raise _Cancelled from None


def _left_by_shards(store: Store, test_id: str) -> list[Cell]:
    """The cells the shards did not finish: never started, held by a dead runner, or stopped
    with their shard (ended `terminated` as "Cancelled", which a user's terminate never is)."""
    left = []
    for inv in store.list_invocations(test_id):
        if inv.status is Status.terminated and inv.error_type == "Cancelled":
            store.transition(inv.invocation_id, Status.queued, allowed=frozenset({inv.status}))
        elif inv.status not in (Status.queued, Status.running):
            continue
        left.append(Cell.of(inv))
    return left


def _dead_shards(store: Store, test_id: str, shards: int, stale: set[str]) -> set[int]:
    return {shard_of(i, shards) for i in abandoned_cells(store, test_id) if i not in stale}


def run_test_sync(**parameters: Any) -> Any:
    """Run the flow from synchronous code (the CLI, tests)."""
    return eventloop.run(run_test(**parameters))


if __name__ == "__main__":
    import sys

    print(run_test_sync(path=sys.argv[1]))
