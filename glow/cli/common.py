"""What every `glow` command shares: the typer app, the rich console, and failing cleanly.

Imports are lazy on purpose: prefect and litellm take seconds to import, so only the commands
that run models (`run`, `quickstart`, `regrade`) pay for them; `results` reads parquet and the
`glow tests` commands talk HTTP without importing rich, prefect or litellm.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console


app = typer.Typer(
    name="glow",
    help="Glow: LLM benchmarks on Prefect. Run tests, read results, drive invocations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@functools.cache
def console(stderr: bool = False) -> Console:
    """The rich console, built on first use: the `glow tests` commands never print through rich,
    whose import would weigh on their start-up. Piped output (CI logs, `| tee`) gets a wide
    fixed width so tables are not squeezed to 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


def fail(message: str, code: int = 2) -> None:
    """Print `message` as an error on stderr and exit with `code` (2: bad input)."""
    console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def quiet_prefect() -> None:
    """Keep the terminal for the progress bar: Prefect prints warnings and up, no analytics.

    The flow and task runs' own loggers stay at INFO, so their lines still reach the Prefect
    API (the flow run's logs in the UI); only the console handler is held at WARNING. Setting
    PREFECT_LOGGING_LEVEL alone silenced those loggers too, and flow runs had no log at all.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
