"""The `glow` command line (typer + rich), one module per command group.

- `glow.cli.local`: `run`, `quickstart` (a test through the run-test flow, locally).
- `glow.cli.results`: `results`, `compare`, `report`, `aggregate`, `regrade`.
- `glow.cli.serve`: `serve` (the HTTP API).
- `glow tests ...`: the API's client commands, in `glow.client` (urllib only, so they start fast).
- `glow.cli.common` (the app, the console, `fail`) and `glow.cli.tables` (what gets printed).

`glow = "glow.cli:app"` is the console script; `python -m glow.cli` runs `main`.
"""

from __future__ import annotations

import sys

from glow.cli import local, results, serve
from glow.cli.common import app, console, fail
from glow.cli.tables import print_failures, print_leaderboard, print_regression, print_summary
from glow.client import tests_app
from glow.errors import GlowError

app.add_typer(tests_app)

__all__ = [
    "app",
    "console",
    "fail",
    "local",
    "main",
    "print_failures",
    "print_leaderboard",
    "print_regression",
    "print_summary",
    "results",
    "serve",
]


def main() -> None:
    """Run the `glow` app; a GlowError that escapes a command is printed, not a traceback."""
    try:
        app()
    except GlowError as exc:
        console(stderr=True).print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)
