"""`regrade-test`: grade a test's recorded outputs again with a rubric, then rebuild its results.

No model under test is called (a judge may be). Completed invocations and those that failed in
grading (`glow.models.GRADING_ERRORS`) are graded, one `grade-invocation` task run each, in
order (one judge call at a time, as the progress bar counts them); then the `aggregate` task
rebuilds the test's AggregatedResults and publishes them. Earlier score rows stay; the test and
its invocations show the latest grading. An invocation whose grading fails again (judge
unreachable...) ends `failed` with that error type and no score, its output kept: regrading
later grades it.

`glow regrade` calls `regrade_test_sync`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from prefect import flow

from glow import eventloop
from glow.context import context_for
from glow.grading import regrade_targets
from glow.store import Store
from glow.threads import STORE, run_in
from rubrics import load_rubric, require_judge
from tasks.aggregate import aggregate
from tasks.grade import grade_invocation

Progress = Callable[[int, int], None]
"""Called with (graded so far, to grade) after each invocation."""

# The caller's progress callback: a flow parameter would be sent to the Prefect API.
_on_progress: ContextVar[Progress | None] = ContextVar("glow_regrade_progress", default=None)


@flow(name="regrade-test", flow_run_name="regrade-{test_id}-with-{rubric_ref}")
async def regrade_test(test_id: str, rubric_ref: str) -> int:
    """Grade the test's completed and grading-failed invocations again with `rubric_ref` (a
    rubric name under rubrics/ or a YAML path, relative to the test file); returns how many
    were graded. SpecError (nothing graded) when the rubric calls a judge and the test has none.
    """
    ctx = await run_in(STORE, context_for, test_id)
    rubric = load_rubric(rubric_ref, base_dir=ctx.loaded.base_dir)
    judge = ctx.loaded.spec.judge
    require_judge(rubric, judge, f"test {test_id}")
    targets = await run_in(STORE, regrade_targets, ctx.store, test_id)
    options = ctx.options(judge) if judge else None
    on_progress = _on_progress.get()
    for done, inv in enumerate(targets, start=1):
        await grade_invocation(
            ctx.store,
            inv,
            rubric=rubric,
            scenario=ctx.scenarios[inv.scenario_id],
            judge=judge,
            options=options,
        )
        if on_progress:
            on_progress(done, len(targets))
    await run_in(STORE, ctx.store.update_test, test_id, rubric=rubric)
    ctx.loaded.rubric = rubric
    await aggregate(test_id)
    return len(targets)


def regrade_test_sync(
    store: Store,
    test_id: str,
    rubric_ref: str,
    *,
    on_progress: Progress | None = None,
) -> int:
    """Run `regrade-test` from synchronous code (the CLI, tests) on `store`; returns how many
    invocations were graded. `on_progress(done, total)` is called after each one."""
    context_for(test_id, store)  # the flow finds the test's context on this store
    token = _on_progress.set(on_progress)
    try:
        return eventloop.run(regrade_test(test_id, rubric_ref))
    finally:
        _on_progress.reset(token)
