"""Prefect's floor: what one task run and one keyed trace artifact per cell cost, with no Glow.

The same shape as Glow's run-test flow with every Glow part taken out: an async flow, `--cells`
no-op async task runs at `--concurrency` in flight, each posting a keyed markdown artifact of a
typical trace's size through Glow's background publisher (the cheapest client path measured),
flushed before the flow returns. No model call, no store, no grading. Whatever this costs (in
this process and in the Prefect server) Glow cannot go below while it keeps a Prefect task run
and a `trace-<invocation-id>` artifact per cell, which the issues require. `--artifacts-only`
posts the artifacts without task runs: the part no client-side design could remove.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from bench.measure import emit
from glow import eventloop

# A trace artifact of a one-call exact-answer cell is ~1.5-3 KB of markdown.
TRACE = "## trace\n\n" + "\n".join(f"- event {i}: " + "x" * 60 for i in range(30))


async def floor(cells: int, concurrency: int, task_runs: bool) -> dict[str, object]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.context import FlowRunContext, TaskRunContext

    from glow.artifacts import ArtifactPublisher

    publisher = ArtifactPublisher()

    async def cell(index: int) -> str:
        task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
        publisher.publish(
            key=f"trace-{uuid.uuid4()}",
            markdown=TRACE,
            description=f"floor cell {index}",
            task_run_id=task_ctx.task_run.id if task_ctx else None,
            flow_run_id=flow_ctx.flow_run.id if flow_ctx and flow_ctx.flow_run else None,
        )
        return "completed"

    if task_runs:
        cell = task(name="floor-cell", cache_policy=NO_CACHE, persist_result=False)(cell)

    @flow(name="prefect-floor")
    async def run(cells: int, concurrency: int) -> str:
        queue = list(range(cells))

        async def worker() -> None:
            while queue:
                await cell(queue.pop())

        await asyncio.gather(*(worker() for _ in range(min(concurrency, cells))))
        await publisher.flush()
        if publisher.failures:
            failed = publisher.failures
            raise RuntimeError(f"{len(failed)} artifacts failed, first: {failed[0]}")
        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else ""

    flow_run_id = await run(cells, concurrency)
    return {"flow_run_id": flow_run_id, "task_runs": cells if task_runs else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--artifacts-only", action="store_true", help="no task runs: only the keyed artifacts"
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    import prefect  # noqa: F401 - import cost kept out of the run, as in the other runners

    imported = time.perf_counter() - t0
    started, cpu = time.perf_counter(), time.process_time()
    # The loop Glow's flow runs on, so the floor is Glow's minus Glow's own work.
    report = eventloop.run(floor(args.cells, args.concurrency, not args.artifacts_only))
    emit(
        {
            "run_wall_s": time.perf_counter() - started,
            "run_cpu_s": time.process_time() - cpu,
            "import_s": imported,
            **report,
        }
    )


if __name__ == "__main__":
    main()
