"""`run-test`: the benchmark flow. Fan out `run-invocation` over every cell, then `aggregate`.

Give it a test as a pydantic parameter (a form in the Prefect UI) or as a path to a test YAML.
With `test_id` and `resume=True` it continues that test: completed cells are not called again.
Concurrency is bounded twice: the test's `concurrency` caps the thread pool, and each model's
`max_in_flight` caps its own calls inside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from glow import progress
from glow.models import Status, TestSpec, slugify
from glow.planning import create_or_resume
from glow.spec import load_test, preflight, resolve_test
from glow.store import Store
from tasks.aggregate import aggregate
from tasks.run_invocation import TestContext, register_context, run_invocation

PROGRESS_EVERY_S = 2.0


def _run_name() -> str:
    """Flow runs are named after the test, so the Prefect UI's list reads as a list of tests."""
    params = flow_run.parameters
    test = params.get("test")
    name = test.get("name") if isinstance(test, dict) else getattr(test, "name", None)
    return slugify(f"test-{name or Path(params.get('path') or 'inline').stem}")


@flow(name="run-test", flow_run_name=_run_name, log_prints=True)
def run_test(
    test: TestSpec | None = None,
    path: str | None = None,
    test_id: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run a benchmark test end to end and return its id, counts and result files."""
    if (test is None) == (path is None):
        raise ValueError("give exactly one of `test` (a test spec) or `path` (a test YAML file)")
    store = Store.from_settings()
    loaded = load_test(path) if path else resolve_test(test)  # type: ignore[arg-type]
    preflight(loaded)
    record, plan = create_or_resume(store, loaded, test_id, resume=resume)
    test_id = record.test_id
    register_context(TestContext(test_id, loaded, store))
    run_ctx = FlowRunContext.get()
    flow_run_id = str(run_ctx.flow_run.id) if run_ctx and run_ctx.flow_run else None
    store.update_test(test_id, status="running", flow_run_id=flow_run_id)

    done_ids = {i.invocation_id for i in store.list_invocations(test_id, status=Status.completed)}
    todo = [c for c in plan if c.invocation_id not in done_ids]
    total, done = len(plan), len(plan) - len(todo)
    print(f"test {test_id}: {total} cells, {len(todo)} to run, {len(record.skipped)} skipped")
    progress_id = create_progress_artifact(
        progress=100.0 * done / max(total, 1), key="progress", description=f"cells of {test_id}"
    )
    progress.emit(done, total, "running")

    last_update = time.monotonic()
    with ThreadPoolTaskRunner(max_workers=loaded.spec.concurrency) as runner:
        futures = [runner.submit(run_invocation, {"cell": cell}) for cell in todo]
        for future in as_completed(futures):
            done += 1
            outcome = future.result(raise_on_failure=False)
            status = outcome.get("status", "failed") if isinstance(outcome, dict) else "crashed"
            progress.emit(done, total, status)
            if time.monotonic() - last_update >= PROGRESS_EVERY_S or done == total:
                update_progress_artifact(progress_id, progress=100.0 * done / max(total, 1))
                last_update = time.monotonic()

    built = aggregate(test_id)
    store.update_test(test_id, status="completed")
    return {
        "test_id": test_id,
        "counts": store.count_invocations(test_id),
        "skipped": len(record.skipped),
        **built,
    }


if __name__ == "__main__":
    import sys

    print(run_test(path=sys.argv[1]))
