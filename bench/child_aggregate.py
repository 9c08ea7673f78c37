"""Child of mode `aggregate`: time `build_results` on the seeded store (imports excluded).

Where the seconds go inside is for a profiler: `py-spy record -- python -m bench.child_aggregate`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.measure import emit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--test-id", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()
    from glow.results.build import build_results
    from glow.store import Store

    store = Store.from_settings()
    imported = time.perf_counter() - t0
    started = time.perf_counter()
    built = build_results(store, args.test_id, out_dir=args.out)
    run_wall = time.perf_counter() - started
    sizes = {name: path.stat().st_size for name, path in built.paths.items()}
    emit(
        {
            "run_wall_s": run_wall,
            "import_s": imported,
            "counts": built.counts,
            "parquet_bytes": sizes,
            "steps": {"build_results": run_wall, **built.timings},
        }
    )


if __name__ == "__main__":
    main()
