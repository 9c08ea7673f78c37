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


EXIT_CANCELLED = 3  # the run was cancelled (Prefect UI or API); --resume continues it
EXIT_BUDGET = 4  # the test's budget_usd was spent; raise it, then --resume


def _reserve_simulator(path: Path) -> int | None:
    """The port the bundled simulator will listen on, when this test needs it (else None).

    The quickstart's models live in the simulator, whose address the test file names as
    ${GLOW_SIMULATOR_URL}. The address is fixed here, before anything starts, so that the test
    file can be loaded and checked first: bad input is reported (exit 2) before any process runs.
    """
    if "GLOW_SIMULATOR_URL" in os.environ or not path.is_file():
        return None
    if "${GLOW_SIMULATOR_URL" not in path.read_text(encoding="utf-8", errors="replace"):
        return None
    from glow.prefect_server import free_port

    port = free_port()
    os.environ["GLOW_SIMULATOR_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ.setdefault("GLOW_SIM_API_KEY", "sim-local-key")
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


def _money(value: float | None) -> str:
    # NaN is how pandas rows (`glow results --categories`) carry an unknown cost
    return "unknown" if value is None or value != value else f"${value:.4f}"


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, fmt)


def print_leaderboard(rows: list[dict[str, Any]], title: str) -> None:
    """Leaderboard rows (or AggregatedResults rows) as a table. A score marked with the
    failures marker leaves failed invocations out; the `failed = 0` columns count them as 0."""
    from rich.table import Table

    from glow.results import FAILURES_MARKER, failures_marker

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
        "score (failed = 0)",
        "pass (failed = 0)",
        "cost",
        "p50 latency",
    ):
        table.add_column(col, justify="left" if col in ("model", "agent") else "right")
    marked = False
    for row in rows:
        ci = f"{_num(row.get('ci95_low'), '.2f')}-{_num(row.get('ci95_high'), '.2f')}"
        marker = row["marker"] if "marker" in row else failures_marker(row)
        marked = marked or bool(marker)
        table.add_row(
            str(row["model"]),
            str(row["agent"]),
            str(row["n"]),
            str(row.get("completed", row.get("n_completed"))),
            str(row.get("failed", row.get("n_failed"))),
            _num(row.get("mean_score")) + marker,
            ci,
            _num(row.get("pass_rate"), ".1%") + marker,
            _num(row.get("mean_score_all")),
            _num(row.get("pass_rate_all"), ".1%"),
            _money(row.get("cost_usd")),
            f"{_num(row.get('latency_p50_s'), '.2f')}s",
        )
    console().print(table)
    if marked:
        console().print(
            f"{FAILURES_MARKER} score and pass rate leave failed invocations out; "
            "'failed = 0' counts them as 0 (mean_score_all, pass_rate_all in aggregated.parquet)",
            highlight=False,
            soft_wrap=True,
        )


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

    _quiet_prefect()
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


def print_failures(test_id: str, store: Any = None) -> None:
    """Failed cells grouped by error type: how many, and one example message each."""
    from rich.markup import escape

    from glow.models import Status
    from glow.store import Store

    store = store or Store.from_settings()
    failed = store.list_invocations(test_id, status=Status.failed)
    if not failed:
        return
    groups: dict[str, list[Any]] = {}
    for invocation in failed:
        groups.setdefault(invocation.error_type or "unknown", []).append(invocation)
    console().print(f"\n[bold red]{len(failed)} failed cells[/], by error type:")
    for error_type, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        example = members[0]
        message = " ".join((example.error_message or "").split())
        if len(message) > 300:
            message = message[:297] + "..."
        console().print(
            escape(
                f"  {error_type}: {len(members)} (e.g. {example.model} on "
                f"{example.scenario_id}: {message or 'no message'})"
            ),
            highlight=False,
            soft_wrap=True,
        )


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
def compare(
    test_id: Annotated[str, typer.Argument(help="The newer test.")],
    base_test_id: Annotated[
        str | None,
        typer.Argument(
            help="The test to compare with (default: the previous completed run "
            "of the same test name)."
        ),
    ] = None,
    categories: Annotated[bool, typer.Option(help="Also print per-category rows.")] = False,
) -> None:
    """Score delta per model x agent against an earlier run (paired 95% CI, p-value), cells
    that newly fail or pass, and the cost delta; from both tests' parquet files."""
    from glow.comparison import OVERALL, compare_tests
    from glow.settings import get_settings
    from glow.store import Store

    try:
        table = compare_tests(
            Store.from_settings(), test_id, base_test_id, get_settings().results_root
        )
    except GlowError as exc:
        fail(str(exc))
    rows = table.to_pylist()
    if not categories:
        rows = [r for r in rows if r["category"] == OVERALL]
    print_regression(
        rows, test_id, table.column("base_test_id")[0].as_py() if rows else base_test_id
    )


def print_regression(rows: list[dict[str, Any]], test_id: str, base_test_id: str | None) -> None:
    from rich.table import Table

    table = Table(title=f"{test_id} against {base_test_id}", title_justify="left")
    columns = ("model", "agent", "category", "pairs", "base", "new", "delta", "95% CI", "p")
    for col in (*columns, "newly failing", "newly passing", "cost delta"):
        table.add_column(
            col, justify="left" if col in columns[:3] else "right", no_wrap=col == "95% CI"
        )
    for row in rows:
        delta = row["delta"]
        colour = (
            ""
            if delta is None or row["p_value"] is None or row["p_value"] >= 0.05
            else ("green" if delta > 0 else "red")
        )
        cost = row["cost_delta_usd"]
        table.add_row(
            str(row["model"]),
            str(row["agent"]),
            str(row["category"]),
            str(row["n_pairs"]),
            _num(row["mean_base"]),
            _num(row["mean_new"]),
            f"[{colour}]{_num(delta, '+.3f')}[/]" if colour else _num(delta, "+.3f"),
            f"[{_num(row['ci95_low'], '+.3f')}, {_num(row['ci95_high'], '+.3f')}]",
            _num(row["p_value"]),
            str(row["newly_failing"]),
            str(row["newly_passing"]),
            "unknown" if cost is None else f"{cost:+.6f}",
        )
    console().print(table)


@app.command()
def report(
    test_id: Annotated[str, typer.Argument(help="The test whose HTML report to write.")],
    compare: Annotated[
        str | None, typer.Option(help="Another test_id: write a side-by-side page of both.")
    ] = None,
) -> None:
    """Write a test's self-contained HTML report (and PNG charts) from its parquet files."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from glow.report import build_comparison, build_report

    bar = Progress(
        TextColumn("[bold]report[/] {task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    )
    try:
        with bar:
            task_id = bar.add_task("reading parquet", total=None)

            def on_progress(step: str, done: int, total: int) -> None:
                bar.update(task_id, description=step, completed=done, total=total)

            if compare:
                path = build_comparison(test_id, compare, progress=on_progress)
            else:
                path = build_report(test_id, progress=on_progress).path
    except GlowError as exc:
        fail(str(exc))
    console().print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command()
def aggregate(test_id: Annotated[str, typer.Argument()]) -> None:
    """Rebuild a test's AggregatedResults and parquet files from the store."""
    from glow.results.build import build_results
    from glow.store import Store

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
    """Grade a test's recorded outputs again with a rubric; no model is called (judges may be).

    Completed invocations and those that failed in grading (judge_error,
    judge_budget_exhausted) are graded; one whose judge fails again stays failed, never 0.
    """
    from rich.progress import Progress

    from glow.models import GRADING_ERRORS, Status
    from glow.results.build import build_results
    from glow.store import Store
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
    ungraded: dict[str, list[str]] = {}
    for inv in store.list_invocations(test_id, status=Status.failed):
        if inv.error_type in GRADING_ERRORS:
            ungraded.setdefault(inv.error_type, []).append(inv.error_message or "")
    if ungraded:
        console().print(
            "[yellow]not graded (their score is unknown, not 0; the outputs are kept): "
            + ", ".join(f"{kind}: {len(msgs)}" for kind, msgs in sorted(ungraded.items()))
            + "[/]",
            highlight=False,
            soft_wrap=True,
        )
        for kind, msgs in sorted(ungraded.items()):
            console().print(f"  {kind}, e.g.: {msgs[0]}", highlight=False, soft_wrap=True)
        console().print(
            f"grade them once the judge answers: glow regrade {test_id} --rubric {rubric} "
            f"(or glow run <test.yaml> --resume {test_id})",
            highlight=False,
            soft_wrap=True,
        )


app.add_typer(tests_app)


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
    from glow.api.guard import is_loopback

    if open_ and not is_loopback(host):
        fail(
            f"--open is allowed only on a loopback host (127.0.0.1, localhost, ::1), not {host}: "
            "anyone who can reach it could run tests; give a token (GLOW_TOKEN) instead"
        )
    if not token and not open_:
        fail(
            "refusing to start without a token: pass --token or set GLOW_TOKEN "
            "(or --open on a loopback host)"
        )
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
