"""`run-invocation`: the Prefect task that executes one cell and publishes its trace.

The flows map this task over cells. The cell's work is `glow.execution.execute_cell`; this
module adds what Prefect shows: the task run named after the cell, the trace as a markdown
artifact `trace-<invocation-id>`, and a terminated cell's task run ending Cancelled.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.states import Cancelled

from glow.artifacts import ArtifactPublisher
from glow.context import context_for
from glow.execution import execute_cell
from glow.models import Cell, Status
from glow.threads import STORE, run_in
from glow.trace import trace_markdown


@task(
    name="run-invocation",
    task_run_name="{cell.label}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def run_invocation(cell: Cell, run_id: str | None = None) -> Any:
    """Run one cell and publish its trace artifact; returns the final status.

    A terminated cell ends its task run Cancelled, so the Prefect UI tells it apart. `run_id`
    names a run the API already opened (`invocation_run`), which this task then carries out.
    """
    # The flow that maps this task registered the context (run-test) or refreshed it just
    # before (run-invocation-flow): no store read on the event loop per cell.
    ctx = context_for(cell.test_id, fresh=False)
    run = await run_in(STORE, ctx.store.get_run, run_id) if run_id else None
    inv, run = await execute_cell(ctx, cell, run=run, grade_only=None)
    task_ctx = TaskRunContext.get()
    publisher = ctx.publisher or ArtifactPublisher()
    publisher.publish(
        key=f"trace-{inv.invocation_id}",
        markdown=trace_markdown(inv, run),
        description=f"{inv.scenario_id} x {inv.model} x {inv.agent}: {inv.status.value}",
        task_run_id=task_ctx.task_run.id if task_ctx else None,
        flow_run_id=task_ctx.task_run.flow_run_id if task_ctx else None,
    )
    if ctx.publisher is None:
        await publisher.flush()
    if inv.status is Status.terminated:
        return Cancelled(message=inv.error_message or "terminated", data=inv.status.value)
    return inv.status.value
