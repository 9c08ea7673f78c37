"""Runner (a): Glow's `run-test` flow against the Prefect server the bench started.

Exactly what `glow run` does minus the progress bar: the flow, one `run-invocation` task run and
one trace artifact per cell, grading, the store writes and the final aggregate. The environment
(PREFECT_API_URL, GLOW_DATABASE_URL, GLOW_RESULTS_DIR) comes from the bench. litellm is imported
before the clock starts, as in the bare loop: `run_wall_s` is the per-cell cost, while the
process wall the parent measures includes every import.
"""

from __future__ import annotations

import argparse
import time

from bench.measure import emit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--test", required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()
    from flows.run_test import run_test_sync as run_test
    from glow.llm import litellm
    from glow.store import Store

    litellm()
    imported = time.perf_counter() - t0
    started, cpu = time.perf_counter(), time.process_time()
    result = run_test(path=args.test)
    run_wall, run_cpu = time.perf_counter() - started, time.process_time() - cpu
    store = Store.from_settings()
    scores: dict[str, int] = {}
    for inv in store.list_invocations(result["test_id"]):
        scores[inv.scenario_id] = int(bool(inv.passed)) if inv.status.value == "completed" else -1
    emit(
        {
            "run_wall_s": run_wall,
            "run_cpu_s": run_cpu,
            "import_s": imported,
            "test_id": result["test_id"],
            "flow_run_id": result.get("flow_run_id"),
            "task_runs": result.get("task_runs"),
            "counts": result["counts"],
            "scores": scores,
        }
    )


if __name__ == "__main__":
    main()
