"""Exporting a test's results: AggregatedResults and the parquet files, built from the store.

Always rebuilt from the store (the ledger), never from in-memory task results, so the export is
the same whether the test just ran, was resumed, regraded, cancelled or changed through the API.
The `aggregate` task (tasks/aggregate.py) publishes what this builds to the Prefect UI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from glow import comparison, results
from glow.models import Rubric, TestRecord
from glow.settings import get_settings
from glow.store import Store


@dataclass
class BuiltResults:
    """What `build_results` wrote: the files' paths and the rows the artifacts show."""

    test_id: str
    paths: dict[str, Path]
    leaderboard: list[dict[str, Any]]
    summary: dict[str, Any]
    counts: dict[str, int]
    skipped: int
    # Against the previous completed run of the same test name (None when there is none).
    base_test_id: str | None = None
    regression: pa.Table | None = None
    # Seconds per step (see `build_results`); steps on the helper thread overlap the others.
    timings: dict[str, float] = field(default_factory=dict)


def results_dir(test_id: str) -> Path:
    """Where a test's parquet files and report are written (`<results_root>/<test_id>`)."""
    return get_settings().results_root / test_id


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = time.perf_counter() - started


def _generations(
    store: Store, test_id: str, out_dir: Path, timings: dict[str, float]
) -> tuple[pa.Table, results.StagedFile]:
    """The helper thread's share: read the generations and stage their file."""
    with _timed(timings, "read_generations"):
        generations = results.generations_table_from_columns(store.generation_columns(test_id))
    return generations, _stage(out_dir, "generations", generations, timings)


def _stage(
    out_dir: Path, name: str, table: pa.Table, timings: dict[str, float]
) -> results.StagedFile:
    """Stage one file beside the published ones, timed."""
    with _timed(timings, f"write_{name}"):
        return results.stage_result(out_dir, name, table)


def _discard_staged(futures: list[Future[Any]]) -> None:
    """After a failure, remove the files the finished tasks staged (the pool has waited for
    every task by then); the published results stay as they were."""
    for future in futures:
        if future.cancelled() or future.exception() is not None:
            continue
        result = future.result()
        staged = result[1] if isinstance(result, tuple) else result  # `_generations` / `_stage`
        staged.discard()


def build_results(store: Store, test_id: str, out_dir: Path | None = None) -> BuiltResults:
    """Aggregate a test's invocations and generations and write its parquet files atomically.

    A test can hold a million invocations, so the work is spread over two threads: the
    generations are read and written on a helper thread while the invocations are read here
    (SQLite and Arrow do most of a read without the GIL), and the invocations' file is written
    on the helper (Arrow encodes without the GIL) while they are aggregated here. The files are
    written beside the old ones and moved into place only once all three are, so a failure
    leaves the previous results whole. `timings` has each step's seconds; steps on the two
    threads overlap.
    """
    record = store.get_test(test_id)
    standards = [s.name for s in record.rubric.standards]
    out_dir = out_dir or results_dir(test_id)
    timings: dict[str, float] = {}
    futures: list[Future[Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="glow-results") as helper:
            futures.append(helper.submit(_generations, store, test_id, out_dir, timings))
            with _timed(timings, "read_invocations"):
                invocations = results.invocations_table_from_columns(
                    store.invocation_columns(test_id), standards
                )
            futures.append(helper.submit(_stage, out_dir, "invocations", invocations, timings))
            with _timed(timings, "wait_generations"):
                generations, _ = futures[0].result()
            with _timed(timings, "aggregate"):
                categories = _scenario_categories(store, record.test_id) if record.skipped else {}
                clusters = comparison.scenario_clusters(record)
                aggregated = results.aggregate(
                    invocations,
                    generations,
                    standards,
                    record.spec.epochs,
                    record.skipped,
                    skipped_categories=categories,
                    test_id=test_id,
                    clusters=clusters,
                    graded_categories=graded_categories(record.rubric, invocations),
                )
            futures.append(helper.submit(_stage, out_dir, "aggregated", aggregated, timings))
            with _timed(timings, "compare"):
                base_test_id, comparisons = _comparisons(store, record, invocations, clusters)
            futures += [helper.submit(_stage, out_dir, n, t, timings) for n, t in comparisons]
            with _timed(timings, "wait_writes"):
                _, staged_generations = futures[0].result()
                staged = [staged_generations, *(f.result() for f in futures[1:])]
    except BaseException:
        _discard_staged(futures)
        raise
    paths = {file.name: file.publish() for file in staged}
    # Counted from the rows just exported, so the counts always match the files.
    statuses = pc.value_counts(invocations.column("status")).to_pylist()
    names = ("invocations", "generations", "aggregated", "pairwise", "regression")
    return BuiltResults(
        test_id=test_id,
        paths={name: paths[name] for name in names if name in paths},
        leaderboard=results.leaderboard(aggregated),
        summary=results.summary(aggregated),
        counts={str(row["values"]): int(row["counts"]) for row in statuses},
        skipped=len(record.skipped),
        base_test_id=base_test_id,
        regression=dict(comparisons).get("regression"),
        timings=timings,
    )


def _comparisons(
    store: Store, record: TestRecord, invocations: pa.Table, clusters: dict[str, str] | None
) -> tuple[str | None, list[tuple[str, pa.Table]]]:
    """pairwise.parquet's table, and regression.parquet's against the previous completed run of
    the same test name when there is one (read from its parquet, else from the store)."""
    tables = [("pairwise", comparison.pairwise_table(invocations, clusters))]
    base_test_id = comparison.previous_completed_test(store, record.test_id)
    if base_test_id is not None:
        base_path = results_dir(base_test_id) / "invocations.parquet"
        if base_path.is_file():
            base = pq.read_table(base_path)
        else:
            base_record = store.get_test(base_test_id)
            base = results.invocations_table_from_columns(
                store.invocation_columns(base_test_id),
                [s.name for s in base_record.rubric.standards],
            )
        regression = comparison.regression_table(
            invocations, base, test_id=record.test_id, base_test_id=base_test_id, clusters=clusters
        )
        tables.append(("regression", regression))
    return base_test_id, tables


def graded_categories(rubric: Rubric, invocations: pa.Table) -> set[str]:
    """The invocations' categories that at least one weighted standard of the rubric grades:
    a failed invocation of any other category would get no score, so it is not counted as 0."""
    import rubrics

    return rubrics.graded_categories(rubric, pc.unique(invocations.column("category")).to_pylist())


def _scenario_categories(store: Store, test_id: str) -> dict[str, str]:
    from glow.context import context_for

    ctx = context_for(test_id, store)
    return {sid: s.category for sid, s in ctx.scenarios.items()}


_rebuild_locks: dict[str, threading.Lock] = {}
_rebuild_guard = threading.Lock()


def rebuild_results(store: Store, test_id: str) -> BuiltResults:
    """Rebuild a test's results (`build_results`); one rebuild per test at a time in this
    process, so the API's changes and a finishing invocation never stage the same files."""
    with _rebuild_guard:
        lock = _rebuild_locks.setdefault(test_id, threading.Lock())
    with lock:
        return build_results(store, test_id)
