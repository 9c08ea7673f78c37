"""`grade-invocation`: grade one recorded invocation again, as a Prefect task.

What `glow regrade` maps over a test's invocations (`flows/regrade.py`). The grading itself is
the engine's (`glow.grading.regrade_invocation`, through `rubrics.agrade`); this task is the
Prefect-facing part: one task run per invocation, named after its cell, and the invocation's
trace artifact (`trace-<invocation-id>`) published again with the new grading.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from glow.artifacts import ArtifactPublisher
from glow.grading import regrade_invocation
from glow.llm import CallOptions
from glow.models import Invocation, ModelSpec, Rubric, Scenario
from glow.store import Store
from glow.threads import STORE, run_in
from glow.trace import trace_markdown


@task(
    name="grade-invocation",
    task_run_name="grade {invocation.scenario_id}-{invocation.model}-{invocation.agent}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def grade_invocation(
    store: Store,
    invocation: Invocation,
    *,
    rubric: Rubric,
    scenario: Scenario,
    judge: ModelSpec | None,
    options: CallOptions | None,
) -> str:
    """Grade the invocation's recorded output with `rubric` and publish its trace again;
    returns the status written (`completed`, or `failed` with a grading error)."""
    status = await regrade_invocation(
        store, invocation, rubric=rubric, scenario=scenario, judge=judge, options=options
    )
    graded = await run_in(STORE, store.get_invocation, invocation.invocation_id)
    if graded.runs:
        task_ctx = TaskRunContext.get()
        publisher = ArtifactPublisher()
        publisher.publish(
            key=f"trace-{graded.invocation_id}",
            markdown=trace_markdown(graded, graded.runs[-1]),
            description=f"{graded.scenario_id} x {graded.model} x {graded.agent}: "
            f"{graded.status.value} (graded again with {rubric.label})",
            task_run_id=task_ctx.task_run.id if task_ctx else None,
            flow_run_id=task_ctx.task_run.flow_run_id if task_ctx else None,
        )
        await publisher.flush()
    return status.value
