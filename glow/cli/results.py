"""`glow results`, `compare`, `report`, `aggregate` and `regrade`: a test's results, read
from its parquet files or rebuilt from the store."""

from __future__ import annotations

from typing import Annotated

import typer

from glow.cli.common import app, console, fail, quiet_prefect
from glow.cli.tables import print_leaderboard, print_regression, print_summary
from glow.errors import GlowError


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

    from flows.regrade import regrade_test_sync
    from glow.models import GRADING_ERRORS, Status
    from glow.prefect_server import embedded_prefect
    from glow.results.build import build_results
    from glow.settings import get_settings
    from glow.store import Store

    store = Store.from_settings()
    quiet_prefect()
    try:
        # `regrade-test` is a flow: it runs on the configured Prefect server, or an embedded one.
        with (
            embedded_prefect(get_settings().data_dir / "prefect-server.log"),
            Progress(console=console()) as bar,
        ):
            task_id = bar.add_task("regrading", total=None)
            count = regrade_test_sync(
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
