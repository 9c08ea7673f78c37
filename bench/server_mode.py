"""`python -m bench --mode server --cells 5000`: the Prefect server at scale, two ways.

The same Glow test (N cells, direct calls to the simulator) runs against a fresh Prefect server
on SQLite, then against one on PostgreSQL with Redis messaging (`prefect-redis`, the machine's
Redis at 127.0.0.1:6379). For each it records the server's CPU per cell (over the run and its
catch-up), how long after the flow ended the server had recorded every task run (the UI shows
every cell from then on), and checks the test's ends: every invocation in the store and in
invocations.parquet, every task run in Prefect. Results are appended to bench/results.jsonl.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import servers, workload
from bench.flow_mode import _prefect_catch_up, child_env
from bench.measure import ROOT, python, run_child

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_SETTINGS = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
    "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
    "PREFECT_REDIS_MESSAGING_PORT": "6379",
}


@contextmanager
def _postgres_database() -> Iterator[str]:
    """A database of its own for the Prefect server; dropped after."""
    from sqlalchemy import create_engine, text

    name = f"glow_bench_prefect_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _redis_clean() -> None:
    """Prefect's Redis streams from an earlier run would be replayed into the new server."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter("*"):
        if key.startswith((b"prefect", b"message", b"events", b"task")):
            client.delete(key)


def _ends(tmp: Path, report: dict[str, Any], cells: int) -> dict[str, Any]:
    """Every invocation in the store and in the parquet file."""
    import pandas as pd

    from glow.store import Store

    test_id = report.get("test_id")
    if not test_id:
        return {"ends_ok": False}
    store = Store(f"sqlite:///{tmp / 'glow.db'}")
    counts = store.count_invocations(test_id)
    rows = len(pd.read_parquet(tmp / "results" / test_id / "invocations.parquet"))
    store.engine.dispose()
    return {
        "store_invocations": sum(counts.values()),
        "store_counts": counts,
        "parquet_rows": rows,
        "ends_ok": sum(counts.values()) == cells == rows,
    }


def run(*, cells: int, concurrency: int, latency: float) -> bool:
    """Run both servers; print and record the figures; True if every end is whole."""
    tmp = Path(tempfile.mkdtemp(prefix="glow-bench-server-"))
    scenarios = workload.write_scenarios(tmp, cells=cells, agent=False)
    timeout = 240 + cells * 0.2
    ok = True
    try:
        with servers.simulator(scenarios, latency) as sim_url:
            for backend in ("sqlite", "postgres+redis"):
                folder = tmp / backend.replace("+", "-")
                folder.mkdir()
                wl = workload.write_test(
                    folder,
                    scenarios,
                    cells=cells,
                    agent=False,
                    sim_url=sim_url,
                    concurrency=concurrency,
                )
                with _server(backend, folder) as (url, server):
                    cpu_before = servers.cpu_seconds(server)
                    child = run_child(
                        f"glow-{backend}",
                        python("bench.child_glow", "--test", str(wl.test)),
                        env=child_env(folder, url),
                        log_dir=folder / "logs",
                        timeout_s=timeout,
                    )
                    figures = _prefect_catch_up(child, url, server, cpu_before)
                figures.update(_ends(folder, child.report, cells))
                total = figures.get("prefect_server_cpu_total_s")
                record = {
                    "mode": "server",
                    "backend": backend,
                    "cells": cells,
                    "concurrency": concurrency,
                    "run_wall_s": child.run_wall_s,
                    "server_cpu_ms_per_cell": round(1000 * total / cells, 2) if total else None,
                    **figures,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                recorded, expected = str(figures.get("prefect_task_runs", "0/1")).split("/")
                ok &= bool(child.ok and figures.get("ends_ok") and recorded == expected)
                print(json.dumps(record))
                with (ROOT / "bench" / "results.jsonl").open("a") as out:
                    out.write(json.dumps(record) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


@contextmanager
def _server(backend: str, folder: Path) -> Iterator[tuple[str, Any]]:
    if backend == "sqlite":
        with servers.prefect_server(folder) as pair:
            yield pair
        return
    _redis_clean()
    with _postgres_database() as url, servers.prefect_server(folder, url, REDIS_SETTINGS) as pair:
        yield pair
