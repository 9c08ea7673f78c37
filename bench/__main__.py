"""`python -m bench [--mode flow|agent|api|aggregate|soak|server|all] [--cells N] ...`

flow: Glow's run-test flow vs a bare litellm loop vs Inspect AI on N exact-answer cells.
agent: the same with 3-turn calculator-agent cells (`--agent` is a shortcut for it).
api: `glow tests invocation get` / `glow tests invocations` CLI latency and paged-list p95.
aggregate: AggregatedResults of 1,000,000 invocation rows into parquet: wall and peak RSS.
soak: Glow's flow over 2,000 cells with ~10% of model calls faulted; checks the end states.
server: 5,000 cells against a Prefect server on SQLite, then on PostgreSQL with Redis messaging:
  the server's CPU per cell, how long after the run the UI shows every cell, and the test's ends.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=["flow", "agent", "api", "aggregate", "soak", "server", "all"],
        default="flow",
    )
    parser.add_argument(
        "--cells",
        type=int,
        default=None,
        help="default 1000 (flow, agent), 2000 (soak), 5000 (server)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="simulated model latency, s")
    parser.add_argument("--agent", action="store_true", help="same as --mode agent")
    parser.add_argument("--skip-inspect", action="store_true")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument(
        "--skip-floor", action="store_true", help="skip Prefect's floor (task run + artifact only)"
    )
    parser.add_argument(
        "--profile",
        choices=["raw", "svg", "speedscope"],
        help="record Glow's flow process with py-spy (kept in the temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--rows", type=int, default=1_000_000, help="aggregate mode: invocations")
    parser.add_argument("--api-invocations", type=int, default=100_000)
    args = parser.parse_args(argv)
    mode = "agent" if args.agent else args.mode
    modes = ["flow", "agent", "api", "aggregate"] if mode == "all" else [mode]
    failed = False
    for current in modes:
        print(f"\n=== bench mode {current} ===", flush=True)
        if current in ("flow", "agent"):
            from bench import flow_mode

            agent = current == "agent"
            cells = 200 if agent and mode == "all" else args.cells or 1000
            runs = flow_mode.run(
                cells=cells,
                concurrency=args.concurrency,
                latency=args.latency,
                agent=agent,
                skip_inspect=args.skip_inspect,
                skip_bare=args.skip_bare,
                skip_floor=args.skip_floor,
                profile=args.profile,
                keep=args.keep,
            )
            failed |= not all(r.ok for r in runs)
        elif current == "soak":
            from bench import soak_mode

            failed |= not soak_mode.run(
                cells=args.cells or 2000,
                concurrency=args.concurrency,
                latency=args.latency,
                keep=args.keep,
            )
        elif current == "server":
            from bench import server_mode

            failed |= not server_mode.run(
                cells=args.cells or 5000, concurrency=args.concurrency, latency=args.latency
            )
        elif current == "api":
            from bench import api_mode

            failed |= not api_mode.run(invocations=args.api_invocations)
        else:
            from bench import aggregate_mode

            failed |= not aggregate_mode.run(rows=args.rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
