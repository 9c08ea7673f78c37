"""The `glow` command line (typer + rich).

Imports are lazy on purpose: prefect and litellm take seconds to import, so only the commands
that run models (`run`, `quickstart`, `regrade`) pay for them; `results` reads parquet and the
`tests` commands talk HTTP.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from glow.client import tests_app
from glow.errors import GlowError

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
    and importing it cost ~50 ms of their 0.3 s budget (issue 5). Piped output (CI logs,
    `| tee`) gets a wide fixed width so tables are not squeezed to 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


QUICKSTART = Path("data/tests/quickstart.yaml")


def fail(message: str, code: int = 2) -> None:
    console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _quiet_prefect() -> None:
    """Keep the terminal for the progress bar: Prefect logs warnings and up, no analytics."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")


def _start_simulator_if_needed(path: Path, stack: ExitStack) -> None:
    """The quickstart's models live in the bundled simulator; start it when a test needs it.

    The flow would start it too (glow.bundled_simulator); starting it here lets preflight check
    the test before the flow, and the flow then shares this one.
    """
    from glow import bundled_simulator

    stack.enter_context(bundled_simulator.simulator_for(path))


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, fmt)


def print_leaderboard(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in (
        "model",
        "agent",
        "n",
        "done",
        "failed",
        "score",
        "95% CI",
        "pass rate",
        "cost",
        "p50 latency",
    ):
        table.add_column(col, justify="left" if col in ("model", "agent") else "right")
    for row in rows:
        ci = f"{_num(row.get('ci95_low'), '.2f')}-{_num(row.get('ci95_high'), '.2f')}"
        table.add_row(
            str(row["model"]),
            str(row["agent"]),
            str(row["n"]),
            str(row["completed"]),
            str(row["failed"]),
            _num(row.get("mean_score")),
            ci,
            _num(row.get("pass_rate"), ".1%"),
            _money(row.get("cost_usd")),
            f"{_num(row.get('latency_p50_s'), '.2f')}s",
        )
    console().print(table)


def print_summary(summary: dict[str, Any], paths: dict[str, Any]) -> None:
    console().print(f"[bold]Total cost:[/] {_money(summary.get('total_cost_usd'))}")
    for model, cost in (summary.get("by_model") or {}).items():
        console().print(f"  {model}: {_money(cost)}")
    unknown = summary.get("cost_unknown_models") or []
    if unknown:
        console().print(
            f"[yellow]cost unknown for {', '.join(unknown)}: no price in litellm's map; add "
            "`prices:` to the model in the test file[/]"
        )
    for name, path in paths.items():
        console().print(f"  {name}: {path}", highlight=False, soft_wrap=True)


@app.command()
def run(
    path: Annotated[Path, typer.Argument(help="A test YAML file.")],
    resume: Annotated[
        str | None, typer.Option(help="Continue this test_id: completed cells are not re-run.")
    ] = None,
) -> None:
    """Run a test locally through the run-test Prefect flow, with a live progress bar."""
    from glow.spec import load_test, preflight

    with ExitStack() as stack:
        try:
            _start_simulator_if_needed(path, stack) if path.is_file() else None
            loaded = load_test(path)
            preflight(loaded)
        except GlowError as exc:
            fail(str(exc))
        _run_flow(path, resume)


def _run_flow(path: Path, resume: str | None) -> None:
    from glow.prefect_server import embedded_prefect
    from glow.settings import get_settings

    _quiet_prefect()
    log_path = get_settings().data_dir / "prefect-server.log"
    embedded = not os.environ.get("PREFECT_API_URL")
    if embedded:
        console().print(f"[dim]starting an embedded Prefect server (~15 s; log: {log_path})[/]")
    with embedded_prefect(log_path) as api_url:
        result = _run_flow_on_prefect(path, resume)
        if embedded and api_url and result.get("flow_run_id"):
            _wait_for_prefect(api_url, result["flow_run_id"], result["task_runs"])


def _wait_for_prefect(api_url: str, flow_run_id: str, expected: int) -> None:
    """Keep the embedded server up until it has recorded every task run, so the UI is whole."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from glow.prefect_server import wait_for_task_runs

    bar = Progress(
        TextColumn("[dim]Prefect recording task runs"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console(),
        transient=True,
    )
    with bar:
        task_id = bar.add_task("recorded", total=expected)
        count = wait_for_task_runs(
            api_url,
            flow_run_id,
            expected,
            on_progress=lambda n, total: bar.update(task_id, completed=n, total=total),
        )
    if count < expected:
        console().print(
            f"[yellow]Prefect recorded {count} of {expected} task runs (its server fell behind "
            "and dropped the rest; see its log). The store and parquet files are complete.[/]"
        )


def _run_flow_on_prefect(path: Path, resume: str | None) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from flows.run_test import run_test_sync as run_test
    from glow import progress

    bar = Progress(
        TextColumn("[bold]cells"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[s]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console(),
    )
    counts: dict[str, int] = {}
    task_id = bar.add_task("cells", total=None, s="")

    def on_progress(done: int, total: int, status: str) -> None:
        if status != "running":
            counts[status] = counts.get(status, 0) + 1
        shown = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        bar.update(task_id, completed=done, total=total, s=shown)

    unsubscribe = progress.subscribe(on_progress)
    try:
        with bar:
            result = run_test(path=str(path), test_id=resume, resume=resume is not None)
    except GlowError as exc:
        fail(str(exc))
    finally:
        unsubscribe()
    summary = result["summary"]
    console().print(
        f"\n[bold]test_id:[/] {result['test_id']}   counts: {result['counts']}"
        f"   skipped (modality): {result['skipped']}"
    )
    import pyarrow.parquet as pq

    from glow import results as results_mod

    aggregated = pq.read_table(result["paths"]["aggregated"])
    print_leaderboard(results_mod.leaderboard(aggregated), "Leaderboard")
    print_summary(summary, result["paths"])
    return result


@app.command()
def quickstart() -> None:
    """Run the offline quickstart benchmark (simulated models, no API keys)."""
    if not QUICKSTART.is_file():
        fail(f"{QUICKSTART} not found: run this from the root of a Glow checkout")
    run(QUICKSTART, None)


@app.command()
def results(
    test_id: Annotated[str, typer.Argument(help="The test whose AggregatedResults to print.")],
    categories: Annotated[bool, typer.Option(help="Also print per-category rows.")] = False,
) -> None:
    """Print a test's AggregatedResults (from its parquet files)."""
    import pyarrow.parquet as pq

    from glow import results as results_mod
    from glow.settings import get_settings

    path = get_settings().results_root / test_id / "aggregated.parquet"
    if not path.is_file():
        fail(f"no results for test {test_id!r} at {path}; run `glow aggregate {test_id}` first")
    aggregated = pq.read_table(path)
    print_leaderboard(results_mod.leaderboard(aggregated), f"Leaderboard of {test_id}")
    if categories:
        frame = aggregated.to_pandas()
        frame = frame[frame["category"] != "*"]
        rows = frame.sort_values(["category", "mean_score"], ascending=[True, False])
        for category, group in rows.groupby("category"):
            print_leaderboard(group.to_dict("records"), f"category: {category}")
    print_summary(results_mod.summary(aggregated), {"aggregated": path})


@app.command()
def aggregate(test_id: Annotated[str, typer.Argument()]) -> None:
    """Rebuild a test's AggregatedResults and parquet files from the store."""
    from glow.store import Store
    from tasks.aggregate import build_results

    try:
        built = build_results(Store.from_settings(), test_id)
    except GlowError as exc:
        fail(str(exc))
    print_leaderboard(built.leaderboard, f"Leaderboard of {test_id}")
    print_summary(built.summary, built.paths)


@app.command()
def regrade(
    test_id: Annotated[str, typer.Argument()],
    rubric: Annotated[str, typer.Option(help="Rubric name under rubrics/ or a YAML path.")],
) -> None:
    """Grade a test's recorded traces again with a rubric; no model is called (judges may be)."""
    from rich.progress import Progress

    from glow.store import Store
    from tasks.aggregate import build_results
    from tasks.grade import regrade_test

    store = Store.from_settings()
    try:
        with Progress(console=console()) as bar:
            task_id = bar.add_task("regrading", total=None)
            count = regrade_test(
                store,
                test_id,
                rubric,
                on_progress=lambda done, total: bar.update(task_id, completed=done, total=total),
            )
        built = build_results(store, test_id)
    except GlowError as exc:
        fail(str(exc))
    console().print(f"regraded {count} invocations with {rubric}")
    print_leaderboard(built.leaderboard, f"Leaderboard of {test_id}")
    print_summary(built.summary, built.paths)


app.add_typer(tests_app)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8484,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="GLOW_TOKEN", show_envvar=True, help="Bearer token every request must carry."
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Run without a token (loopback hosts only).")
    ] = False,
) -> None:
    """Serve the HTTP API (POST /test/<op>); starts an embedded Prefect server if none is set."""
    if not token and not open_:
        fail(
            "refusing to start without a token: pass --token or set GLOW_TOKEN "
            "(or --open on a loopback host)"
        )
    if not token and host not in LOOPBACK:
        fail(f"--open is allowed only on a loopback host (127.0.0.1), not {host}")
    _quiet_prefect()
    from glow.api import serve as serve_api

    serve_api(host, port, token or None)


def main() -> None:
    try:
        app()
    except GlowError as exc:
        console(stderr=True).print(f"[bold red]error:[/] {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
