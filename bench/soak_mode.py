"""Mode `soak`: Glow's run-test flow over N cells against a simulator that fails ~10% of calls.

The faults are mixed (429 with and without Retry-After, 500, 502, 503, connection resets,
malformed JSON, empty choices, and hangs longer than the per-call timeout); the test spec allows
2 retries, so a cell fails only when three calls in a row fail. After the run the bench checks
the store and the parquet export: every invocation ended completed or failed, every failed one
carries a non-empty error of an expected transient kind, and the store's per-status counts equal
those of invocations.parquet.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import report, servers, workload
from bench.flow_mode import _print_done, _reset_stats, child_env
from bench.measure import python, run_child

TIMEOUT_S = 2.0
HANG_S = 5.0
MAX_RETRIES = 2
FAULTS: dict[str, Any] = {
    "rates": {
        "429": 0.015,
        "429_no_retry_after": 0.01,
        "500": 0.015,
        "502": 0.01,
        "503": 0.015,
        "reset": 0.01,
        "malformed": 0.01,
        "empty": 0.01,
        "hang": 0.005,
    },
    "retry_after_s": 0.2,
    "hang_s": HANG_S,
    "seed": 7,
}
# What litellm / Glow name the errors the faults above produce (a failed cell's last error).
EXPECTED_ERRORS = {
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
    "APIConnectionError",
    "APIError",
    "Timeout",
    "APITimeoutError",
    "EmptyResponseError",
    "JSONDecodeError",
}


def _sim_faults(sim_url: str) -> dict[str, int]:
    stats = httpx.get(f"{sim_url.removesuffix('/v1')}/stats", timeout=10).json()
    models = stats.get("models") or {}
    entry = (
        models.get(workload.MODEL, {})
        if isinstance(models, dict)
        else next((m for m in models if m.get("name") == workload.MODEL), {})
    )
    return {str(k): int(v) for k, v in (entry.get("faults") or {}).items()}


def _trace_errors(db: Path, test_id: str) -> Counter[str]:
    """Error events of the model calls (each a retried or final failed attempt), by type."""
    errors: Counter[str] = Counter()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.trace FROM runs r JOIN invocations i ON r.invocation_id = i.invocation_id "
            "WHERE i.test_id = ?",
            (test_id,),
        )
        for (trace,) in rows:
            for event in json.loads(trace or "[]"):
                if event.get("kind") == "error" and event.get("attempt") is not None:
                    errors[event.get("error_type") or "?"] += 1
    return errors


def check(tmp: Path, test_id: str) -> tuple[list[str], dict[str, Any]]:
    """The soak's invariants over the store and invocations.parquet: (problems, figures)."""
    import pandas as pd

    from glow.store import Store

    problems: list[str] = []
    store = Store(f"sqlite:///{tmp / 'glow.db'}", create=False)
    invocations = store.list_invocations(test_id)
    counts = store.count_invocations(test_id)
    store.engine.dispose()
    by_status = Counter(i.status.value for i in invocations)
    stray = {s: n for s, n in by_status.items() if s not in ("completed", "failed")}
    if stray:
        problems.append(f"invocations neither completed nor failed: {stray}")
    failed = [i for i in invocations if i.status.value == "failed"]
    kinds = Counter(i.error_type for i in failed)
    for inv in failed:
        if not inv.error_type or not inv.error_message:
            problems.append(f"{inv.invocation_id}: failed without error_type/error_message")
        elif inv.error_type not in EXPECTED_ERRORS:
            problems.append(
                f"{inv.invocation_id}: unexpected error {inv.error_type}: {inv.error_message[:200]}"
            )
    parquet = tmp / "results" / test_id / "invocations.parquet"
    if not parquet.exists():
        problems.append(f"no {parquet}")
        pq_counts: dict[str, int] = {}
        pq_rows = 0
    else:
        frame = pd.read_parquet(parquet, columns=["status", "error_type"])
        pq_rows = len(frame)
        pq_counts = {str(k): int(v) for k, v in frame["status"].value_counts().items()}
    if sum(counts.values()) != pq_rows:
        problems.append(f"store holds {sum(counts.values())} invocations, parquet {pq_rows} rows")
    if counts != pq_counts:
        problems.append(f"per-status counts differ: store {counts}, parquet {pq_counts}")
    if len(invocations) != sum(counts.values()):
        problems.append(f"listed {len(invocations)} invocations, counted {sum(counts.values())}")
    figures = {
        "store_counts": counts,
        "parquet_rows": pq_rows,
        "parquet_counts": pq_counts,
        "failed": len(failed),
        "failed_error_types": dict(kinds),
        "attempts_total": sum(i.attempts for i in invocations),
    }
    return problems, figures


def run(*, cells: int, concurrency: int, latency: float, keep: bool = False) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="glow-bench-soak-"))
    scenarios = workload.write_scenarios(tmp, cells=cells, agent=False)
    rates = FAULTS["rates"]
    print(
        f"soak: {cells} cells, {concurrency} in flight, {latency * 1000:.0f} ms latency, "
        f"{sum(rates.values()):.0%} of calls faulted ({', '.join(rates)}), "
        f"timeout_s {TIMEOUT_S:g}, hang_s {HANG_S:g}, max_retries {MAX_RETRIES}; files in {tmp}"
    )
    ok = False
    try:
        with servers.simulator(scenarios, latency, {workload.MODEL: FAULTS}) as sim_url:
            wl = workload.write_test(
                tmp, scenarios, cells=cells, agent=False, sim_url=sim_url, concurrency=concurrency
            )
            spec = yaml.safe_load(wl.test.read_text())
            spec.update(name=f"bench-soak-{cells}", timeout_s=TIMEOUT_S, max_retries=MAX_RETRIES)
            wl.test.write_text(yaml.safe_dump(spec, sort_keys=False))
            print("starting a Prefect server (not timed)...", flush=True)
            with servers.prefect_server(tmp) as (prefect_url, server):
                _reset_stats(sim_url)
                server_cpu = servers.cpu_seconds(server)
                t0 = time.perf_counter()
                r = run_child(
                    "glow",
                    python("bench.child_glow", "--test", str(wl.test)),
                    env=child_env(tmp, prefect_url),
                    log_dir=tmp / "logs",
                    timeout_s=600 + cells * 0.3,
                )
                wall = time.perf_counter() - t0
                after = servers.cpu_seconds(server)
                sim_faults = _sim_faults(sim_url)
                _print_done(r)
        print()
        report.print_table([r])
        test_id = r.report.get("test_id")
        problems: list[str] = [] if r.ok else [f"the flow child failed rc={r.returncode}"]
        figures: dict[str, Any] = {}
        if test_id:
            more, figures = check(tmp, test_id)
            problems += more
            trace_errors = _trace_errors(tmp / "glow.db", test_id)
            figures["retries_trace_error_events"] = sum(trace_errors.values())
            figures["trace_error_types"] = dict(trace_errors)
        figures["sim_faults"] = sim_faults
        figures["sim_faults_total"] = sum(sim_faults.values())
        if server_cpu is not None and after is not None:
            figures["prefect_server_cpu_s"] = round(after - server_cpu, 2)
        run_s = r.run_wall_s or wall
        figures["cells_per_s"] = round(cells / run_s, 1) if run_s else None
        print(
            f"wall {r.wall_s:.1f}s (flow run {report.fmt(r.run_wall_s)}s), "
            f"{report.fmt(figures['cells_per_s'])} cells/s, peak RSS {r.max_rss_mb:.0f} MB"
        )
        print(
            f"store {figures.get('store_counts')}, parquet {figures.get('parquet_rows')} rows "
            f"{figures.get('parquet_counts')}"
        )
        print(
            f"failed {figures.get('failed')} {figures.get('failed_error_types')}; "
            f"attempts {figures.get('attempts_total')}"
        )
        print(
            f"faults injected {figures['sim_faults_total']} {sim_faults}; "
            f"error events in traces {figures.get('retries_trace_error_events')} "
            f"{figures.get('trace_error_types')}"
        )
        ok = not problems
        for problem in problems[:30]:
            print(f"  PROBLEM: {problem}")
        if len(problems) > 30:
            print(f"  ... and {len(problems) - 30} more")
        verdict = (
            f"{'OK' if ok else 'FAILED'}: {figures.get('failed', '?')} failed of {cells}, "
            f"{figures['sim_faults_total']} faults, {figures.get('cells_per_s')} cells/s"
            f"; problems {len(problems)}"
        )
        print(verdict)
        params = {"cells": cells, "concurrency": concurrency, "latency": latency}
        report.append("soak", params, [r], verdict, {**figures, "faults": FAULTS})
        print(f"appended to {report.RESULTS_JSONL.name} and {report.RESULTS_MD.name}")
        return ok
    finally:
        if keep or not ok:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
