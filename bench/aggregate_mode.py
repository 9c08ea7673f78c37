"""Mode `aggregate`: AggregatedResults of a million invocations into parquet, < 15 s, < 2 GB.

The store is seeded (not timed) with `--rows` invocations and one generation each; a child then
runs `glow.results.build.build_results` on it, measured by wall time and peak RSS.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench import report, seed
from bench.flow_mode import child_env
from bench.measure import python, run_child

WALL_TARGET_S = 15.0
RSS_TARGET_MB = 2048.0
EPOCHS = 5


def run(*, rows: int) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="glow-bench-agg-"))
    try:
        from glow.store import Store

        db = tmp / "glow.db"
        store = Store(f"sqlite:///{db}")
        scenarios = max(1, rows // (len(seed.MODELS) * EPOCHS))
        test_id = seed.create_test(store, scenarios=scenarios, epochs=EPOCHS)
        store.engine.dispose()
        t0 = time.perf_counter()
        n = seed.seed_invocations(db, test_id, scenarios=scenarios, epochs=EPOCHS, generations=True)
        print(
            f"seeded {n} invocations + {n} generations in {time.perf_counter() - t0:.1f}s "
            f"(not timed); db {db.stat().st_size / 2**20:.0f} MB"
        )
        r = run_child(
            "aggregate",
            python("bench.child_aggregate", "--test-id", test_id, "--out", str(tmp / "out")),
            env=child_env(tmp, None),
            log_dir=tmp / "logs",
            timeout_s=600,
        )
        print()
        report.print_table([r])
        wall = r.run_wall_s
        ok = r.ok and wall is not None and wall < WALL_TARGET_S and r.max_rss_mb < RSS_TARGET_MB
        if not r.ok and r.log:
            print(r.log.read_text(errors="replace")[-3000:])
        print(
            f"build_results: {report.fmt(wall, '.2f')} s (target < {WALL_TARGET_S:.0f} s), "
            f"process {r.wall_s:.1f} s, peak RSS {r.max_rss_mb:.0f} MB "
            f"(target < {RSS_TARGET_MB:.0f} MB): {'MET' if ok else 'NOT MET'}"
        )
        for step, seconds in (r.report.get("steps") or {}).items():
            print(f"  {step}: {seconds:.2f}s")
        verdict = f"{'MET' if ok else 'NOT MET'}: {n} rows"
        report.append("aggregate", {"cells": n}, [r], verdict, r.report.get("steps"))
        return ok
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
