"""`glow run` and `glow quickstart`: run a test locally through the run-test flow.

Everything is checked before any process starts (the Prefect API, the test file, the bundled
simulator's scenarios), then the bundled simulator and an embedded Prefect server start when
the test needs them, and a live progress bar follows the cells.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from glow.cli.common import app, console, fail, quiet_prefect
from glow.cli.tables import print_failures, print_leaderboard, print_summary
from glow.errors import GlowError

QUICKSTART = Path("data/tests/quickstart.yaml")


EXIT_CANCELLED = 3  # the run was cancelled (Prefect UI or API); --resume continues it


EXIT_BUDGET = 4  # the test's budget_usd was spent; raise it, then --resume


def _reserve_simulator(path: Path) -> int | None:
    """The port the bundled simulator will listen on, when this test needs it (else None).

    The quickstart's models live in the simulator, whose address the test file names as
    ${GLOW_SIMULATOR_URL}. The address is fixed here, before anything starts, so that the test
    file can be loaded and checked first: bad input is reported (exit 2) before any process runs.
    """
    from glow import bundled_simulator as bundled

    if bundled.URL_VAR in os.environ or not path.is_file():
        return None
    if not bundled.needs_simulator(path.read_text(encoding="utf-8", errors="replace")):
        return None
    from glow.prefect_server import free_port

    port = free_port()
    # The flow's `bundled_simulator.simulator_for` then finds this address set and shares it.
    os.environ[bundled.URL_VAR] = f"http://127.0.0.1:{port}/v1"
    os.environ.setdefault(bundled.KEY_VAR, bundled.LOCAL_KEY)
    return port


def _check_simulator_scenarios() -> None:
    """The simulator reads every scenario file under data/scenarios: a bad line is bad input."""
    from glow.simulator import load_scenarios

    try:
        load_scenarios()
    except (ValueError, OSError) as exc:
        raise GlowError(str(exc)) from None


def _start_simulator_if_needed(port: int | None, stack: ExitStack) -> None:
    """Start the bundled simulator on the reserved port; it dies with this process."""
    if port is None:
        return
    from glow.simulator import SimulatorProcess

    try:
        sim = stack.enter_context(SimulatorProcess(port=port))
    except RuntimeError as exc:
        fail(f"the bundled model simulator did not start: {exc}", code=1)
    console().print(f"[dim]started the bundled model simulator at {sim.url}[/]")


@app.command()
def run(
    path: Annotated[Path, typer.Argument(help="A test YAML file.")],
    resume: Annotated[
        str | None, typer.Option(help="Continue this test_id: completed cells are not re-run.")
    ] = None,
) -> None:
    """Run a test locally through the run-test Prefect flow, with a live progress bar.

    Exit codes: 0 done, 2 bad input or an unusable setup (nothing started), 3 cancelled,
    4 budget exhausted (3 and 4 print the `--resume` command that continues the test).
    """
    from glow.spec import load_test, preflight

    # Everything is checked before any process (simulator, Prefect server) starts.
    _check_prefect_api()
    sim_port = _reserve_simulator(path)
    try:
        loaded = load_test(path)
        preflight(loaded)
        if sim_port is not None:
            _check_simulator_scenarios()
    except GlowError as exc:
        fail(str(exc))
    with ExitStack() as stack:
        _start_simulator_if_needed(sim_port, stack)
        _run_flow(path, resume)


def _check_prefect_api() -> None:
    """A configured PREFECT_API_URL must answer, or the run is refused before it starts."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    from glow.prefect_server import api_problem

    problem = api_problem(url)
    if problem:
        fail(
            f"PREFECT_API_URL={url} {problem}. Start that Prefect server "
            "(`prefect server start`), or unset PREFECT_API_URL to let `glow run` start an "
            "embedded one."
        )


def _run_flow(path: Path, resume: str | None) -> None:
    from glow.prefect_server import embedded_prefect
    from glow.settings import get_settings

    quiet_prefect()
    log_path = get_settings().data_dir / "prefect-server.log"
    embedded = not os.environ.get("PREFECT_API_URL")
    if embedded:
        console().print(f"[dim]starting an embedded Prefect server (~15 s; log: {log_path})[/]")
    with embedded_prefect(log_path) as api_url:
        result = _run_flow_on_prefect(path, resume)
        if embedded and api_url and result.get("flow_run_id"):
            _wait_for_prefect(api_url, result["flow_run_id"], result["task_runs"])
    if result.get("status") == "cancelled":
        raise typer.Exit(EXIT_CANCELLED)
    if result.get("status") == "budget_exhausted":
        raise typer.Exit(EXIT_BUDGET)


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

    _hide_cancel_noise()
    unsubscribe = progress.subscribe(on_progress)
    try:
        with bar:
            state = run_test(
                path=str(path), test_id=resume, resume=resume is not None, return_state=True
            )
        if state.is_cancelled():
            return _report_cancelled(path, state)
        result = state.result()
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
    print_failures(result["test_id"])
    if result.get("status") == "budget_exhausted":
        counts = result["counts"]
        console().print(
            f"\n[bold yellow]budget exhausted[/]: {_counts_text(counts)}; the cells not started "
            "stay queued. Raise budget_usd in the test file, then continue with:"
        )
        console().print(f"  {_resume_command(path, result['test_id'])}", highlight=False)
    return result


def _hide_cancel_noise() -> None:
    """Keep Prefect's ERROR lines about a cancel out of the terminal (not out of its UI).

    A cancel abandons the cells in flight, which Prefect then logs as crashed, and the flow run
    as finished Cancelled, each at ERROR: a wall of alarms for what the user asked for. The
    summary printed after the run says what happened; the Prefect UI still has every line.
    """
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _CancelNoise) for f in handler.filters
        ):
            handler.addFilter(_CancelNoise())


class _CancelNoise:
    """A logging filter: drops the records Prefect writes for the cells a cancel abandons."""

    MARKS = ("cancelled by the runtime environment", "Finished in state Cancelled")

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        return not any(mark in message for mark in self.MARKS)


def _counts_text(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    shown = ", ".join(f"{counts[k]} {k}" for k in sorted(counts) if counts[k])
    return f"{shown} (of {total} cells)"


def _resume_command(path: Path, test_id: str) -> str:
    import shlex

    return f"glow run {shlex.quote(str(path))} --resume {shlex.quote(test_id)}"


def _report_cancelled(path: Path, state: Any) -> dict[str, Any]:
    """What a cancelled run did, and how to continue it (no traceback: a cancel is no crash)."""
    from glow.settings import get_settings
    from glow.store import Store

    flow_run_id = state.state_details.flow_run_id
    store = Store.from_settings()
    test_id = store.test_for_flow_run(str(flow_run_id)) if flow_run_id else None
    if test_id is None:
        console().print("\n[bold yellow]cancelled[/] before any cell ran; nothing to resume.")
        return {"status": "cancelled"}
    counts = store.count_invocations(test_id)
    console().print(
        f"\n[bold yellow]test {test_id} cancelled[/]: {_counts_text(counts)}; "
        "unfinished cells are terminated and run again on resume."
    )
    folder = get_settings().results_root / test_id
    console().print(f"  results of the completed cells: {folder}", highlight=False, soft_wrap=True)
    print_failures(test_id, store)
    console().print("Continue it with:")
    console().print(f"  {_resume_command(path, test_id)}", highlight=False, soft_wrap=True)
    return {"status": "cancelled", "test_id": test_id}


@app.command()
def quickstart() -> None:
    """Run the offline quickstart benchmark (simulated models, no API keys)."""
    if not QUICKSTART.is_file():
        fail(f"{QUICKSTART} not found: run this from the root of a Glow checkout")
    run(QUICKSTART, None)
