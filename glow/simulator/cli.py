"""`python -m glow.simulator`: serve the simulator until SIGTERM/SIGINT (see `--help`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from glow.simulator.app import build_app
from glow.simulator.faults import FAULT_KINDS, Faults, parse_faults
from glow.simulator.process import URL_PREFIX, bind_socket, make_server, serve, socket_url
from glow.simulator.scenarios import DEFAULT_SCENARIOS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glow.simulator",
        description="OpenAI-compatible model simulator for offline Glow runs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--scenarios",
        action="append",
        metavar="PATH",
        help=f"a .jsonl file or a directory of them; repeatable (default: {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME=ACCURACY:LATENCY[:JITTER[:KIND]]",
        help="add or override a model profile; KIND is answer (default) or echo; repeatable",
    )
    parser.add_argument(
        "--latency", type=float, help="fixed latency in seconds for every profile (no jitter)"
    )
    parser.add_argument(
        "--faults",
        action="append",
        default=[],
        metavar="JSON|@FILE",
        help=(
            "faults per model, a JSON object {model|*: spec}, e.g. "
            '\'{"sim-fast": {"429": 0.05, "reset": 0.01}, "sim-strong": {"fail_first": 2, '
            '"fail_kind": "500", "per_prompt": true}}\'; kinds: '
            + ", ".join(FAULT_KINDS)
            + "; repeatable (later wins per model); change at runtime with POST /faults"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the URL line on stdout once listening."""
    args = _parser().parse_args(argv)
    try:
        faults: dict[str, Faults | None] = {}
        for spec in args.faults:
            faults.update(parse_faults(spec))
        app = build_app(args.scenarios, args.profile, args.latency, faults)
    except (ValueError, OSError) as exc:
        print(f"glow.simulator: {exc}", file=sys.stderr)
        return 2
    sock = bind_socket(args.host, args.port)
    url = socket_url(sock)
    # uvicorn re-raises the signal it caught after shutting down; make that a quiet exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    asyncio.run(serve(make_server(app), sock, lambda: print(URL_PREFIX + url, flush=True)))
    return 0
