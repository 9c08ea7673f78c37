"""The HTML report of a test: `build_report` writes `report.html` beside the test's parquet
files, with its charts also as PNG files under `report/`; `build_comparison` puts two tests
side by side.

The page is self-contained (inline CSS, SVG and script; no network) and everything in it is
read from the parquet files (see `glow.report.data`). The modules here import matplotlib and
pandas only when a report is built, so importing `glow.report` is cheap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from glow.report.data import ReportData, ReportError, load

__all__ = ["Report", "ReportError", "build_comparison", "build_report", "prefect_ui_url"]

Progress = Callable[[str, int, int], None]
REPORT_FILE = "report.html"
CHARTS_DIR = "report"


@dataclass
class Report:
    """Where a report went: the HTML page, each chart's PNG, and what the summary needs."""

    test_id: str
    path: Path
    charts: dict[str, Path] = field(default_factory=dict)
    matrix_rows: int = 0
    matrix_total_rows: int = 0
    seconds: float = 0.0
    # The leaderboard as the page shows it (best first, with the failure-inclusive columns).
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    # Failed and terminated invocations per error type, most frequent first.
    failures: dict[str, int] = field(default_factory=dict)


def prefect_ui_url(api_url: str | None = None) -> str | None:
    """The Prefect UI's address, for links to trace artifacts: PREFECT_UI_URL, else the API URL
    (PREFECT_API_URL) without its `/api` suffix; None when neither is set (no links then)."""
    ui = os.environ.get("PREFECT_UI_URL")
    if ui:
        return ui.rstrip("/")
    api = api_url or os.environ.get("PREFECT_API_URL")
    if not api:
        return None
    api = api.rstrip("/")
    return api[: -len("/api")] if api.endswith("/api") else api


def _write(path: Path, data: bytes) -> None:
    """Replace `path` whole: a reader never sees half a page."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _charts(data: ReportData, board: Any, progress: Progress) -> tuple[list[Any], Any]:
    from glow.report import charts
    from glow.report import data as d

    steps = 7
    drawn = []
    progress("leaderboard chart", 1, steps)
    drawn.append(charts.leaderboard_chart(board))
    frontier = d.pareto_frontier(list(board["cost_usd"]), list(board["mean_score"]))
    progress("cost and latency charts", 2, steps)
    drawn.append(charts.cost_chart(board, frontier))
    drawn.append(charts.latency_chart(board))
    progress("heatmaps", 3, steps)
    categories = d.category_matrix(data, board)
    if categories.shape[1]:
        drawn.append(
            charts.heatmap_chart(
                categories, "heatmap-category", "Mean score by category", "category"
            )
        )
    standards = d.standard_matrix(data, board)
    if standards.shape[1]:
        drawn.append(
            charts.heatmap_chart(
                standards, "heatmap-standard", "Mean score by standard", "standard"
            )
        )
    progress("failures", 4, steps)
    failures = d.failures(data, board)
    data.failure_counts = {str(k): int(v) for k, v in failures.sum().items()}
    if failures.shape[1]:
        drawn.append(charts.failures_chart(failures))
    return drawn, frontier


def _pairs(frame: Any) -> Any:
    if frame is None or frame.empty:
        return None
    if "category" in frame.columns:
        frame = frame[frame["category"].astype(str) == "*"]
    return frame.reset_index(drop=True) if not frame.empty else None


def _pair_labels(frame: Any) -> list[str]:
    agents = len(set(frame["agent_a"]) | set(frame["agent_b"])) > 1
    return [
        f"{r['model_a']}{' / ' + r['agent_a'] if agents else ''} vs "
        f"{r['model_b']}{' / ' + r['agent_b'] if agents else ''}"
        for r in frame.to_dict("records")
    ]


def build_report(
    test_id: str,
    directory: Path | None = None,
    *,
    ui_url: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Write `<directory>/report.html` (and `report/<chart>.png`) from a test's parquet files.

    `directory` defaults to the test's results folder (`GLOW_RESULTS_DIR/<test_id>`). `ui_url`
    is the Prefect UI address for trace links (default: `prefect_ui_url()`). `progress(step,
    i, n)` is called as the work goes (the CLI draws it). Raises ReportError when the parquet
    files are missing or unreadable."""
    from glow.report import charts as charts_mod
    from glow.report import data as d
    from glow.report import page
    from glow.settings import get_settings

    started = time.perf_counter()
    report_progress = progress or (lambda step, i, n: None)
    directory = Path(directory or get_settings().results_root / test_id)
    ui_url = ui_url if ui_url is not None else prefect_ui_url()
    report_progress("reading parquet", 0, 7)
    data = load(directory, test_id)
    board = d.leaderboard(data)
    drawn, frontier = _charts(data, board, report_progress)
    by_name = {c.name: c for c in drawn}

    sections: list[tuple[str, str, str]] = []
    lead = (
        "Mean score of completed invocations per model and agent, with its 95% confidence "
        "interval (mean ± 1.96 standard errors)."
    )
    sections.append(
        (
            "leaderboard",
            "Leaderboard",
            f'<section id="leaderboard"><h2>Leaderboard</h2><p class="lead">{lead}</p>'
            f"{page.leaderboard_table(board)}{page._figure(by_name['leaderboard'])}</section>",
        )
    )
    on_frontier = ", ".join(board["label"].iloc[i] for i in frontier) or "none (costs unknown)"
    sections.append(
        (
            "cost",
            "Cost & latency",
            '<section id="cost"><h2>Cost and latency</h2><p class="lead">On the cost-quality '
            f'frontier: <b>{escape(on_frontier)}</b>.</p><div class="grid">'
            f"{page._figure(by_name['cost'])}{page._figure(by_name['latency'])}</div></section>",
        )
    )
    heatmaps = [by_name[n] for n in ("heatmap-category", "heatmap-standard") if n in by_name]
    if heatmaps:
        sections.append(
            (
                "heatmaps",
                "Categories & standards",
                '<section id="heatmaps"><h2>Where each model scores</h2><div class="grid">'
                + "".join(page._figure(c) for c in heatmaps)
                + "</div></section>",
            )
        )
    failures = by_name.get("failures")
    body = (
        page._figure(failures)
        if failures
        else '<p class="lead" id="no-failures">No failed or terminated invocations.</p>'
    )
    sections.append(
        ("failures", "Failures", f'<section id="failures"><h2>Failures</h2>{body}</section>')
    )

    report_progress("comparisons", 5, 7)
    pairwise = _pairs(data.pairwise)
    if pairwise is not None:
        labels = _pair_labels(pairwise)
        chart = charts_mod.forest_chart(
            pairwise,
            labels,
            "pairwise",
            "Paired differences (A − B)",
            "mean score A − B",
            "mean_diff",
        )
        drawn.append(chart)
        sections.append(
            (
                "pairwise",
                "Pairwise",
                '<section id="pairwise"><h2>Model against model</h2><p class="lead">Paired '
                "differences on the same scenarios and epochs (pairwise.parquet).</p>"
                f"{page.pairwise_table(pairwise, labels)}{page._figure(chart)}</section>",
            )
        )
    regression = _pairs(data.regression)
    if regression is not None:
        agents = regression["agent"].nunique() > 1
        labels = [
            f"{r['model']}{' / ' + r['agent'] if agents else ''}"
            for r in regression.to_dict("records")
        ]
        base = ", ".join(sorted({str(b) for b in regression["base_test_id"]}))
        chart = charts_mod.forest_chart(
            regression, labels, "regression", "Change since the base run", "score change", "delta"
        )
        drawn.append(chart)
        sections.append(
            (
                "regression",
                "Regression",
                '<section id="regression"><h2>Against the previous run</h2><p class="lead">'
                f"Base test: <code>{escape(base)}</code> (regression.parquet).</p>"
                f"{page.regression_table(regression, labels)}{page._figure(chart)}</section>",
            )
        )

    report_progress("scenario matrix", 6, 7)
    matrix = d.scenario_matrix(data, board)
    matrix_html, details = page.matrix_section(matrix, ui_url)
    sections.append(("matrix", "Scenarios × models", matrix_html))

    inv = data.invocations
    status = inv["status"].astype(str).value_counts()
    total_cost = board["cost_usd"].sum(min_count=1) if board["cost_usd"].notna().all() else None
    chips = [
        ("invocations", f"{len(inv):,}"),
        ("completed", f"{int(status.get('completed', 0)):,}"),
        ("failed", f"{int(status.get('failed', 0)):,}"),
        ("terminated", f"{int(status.get('terminated', 0)):,}"),
        ("models × agents", str(len(board))),
        ("categories", str(len(data.categories))),
        ("total cost", page._money(total_cost)),
    ]
    if len(board) and board["mean_score"].notna().any():
        chips.insert(0, ("leads", str(board["label"].iloc[0])))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    files = " · ".join(
        f"<code>{n}.parquet</code>"
        for n in ("invocations", "generations", "aggregated", "pairwise", "regression")
        if (directory / f"{n}.parquet").is_file()
    )
    html = page.page(
        title=f"Glow report · test {test_id}",
        subtitle=f"Generated {generated} from the parquet files in {directory}",
        chips=chips,
        sections=sections,
        details=details,
        meta={"test_id": test_id, "ui_url": ui_url},
        footer=f"Glow · data: {files}",
    )
    report_progress("writing files", 7, 7)
    charts_dir = directory / CHARTS_DIR
    charts_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for chart in drawn:
        paths[chart.name] = charts_dir / f"{chart.name}.png"
        _write(paths[chart.name], chart.png)
    path = directory / REPORT_FILE
    _write(path, html.encode("utf-8"))
    return Report(
        test_id=test_id,
        path=path,
        charts=paths,
        matrix_rows=len(matrix.rows),
        matrix_total_rows=matrix.total_rows,
        seconds=time.perf_counter() - started,
        leaderboard=board.drop(columns=["test_id"], errors="ignore").to_dict("records"),
        failures=data.failure_counts,
    )


def build_comparison(
    test_id: str,
    other_id: str,
    *,
    root: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write `<root>/<test_id>/compare-<other_id>.html`: the two tests' leaderboards, scores
    and category heatmaps side by side (same self-contained page as the report)."""
    from glow.report import charts as charts_mod
    from glow.report import data as d
    from glow.report import page
    from glow.settings import get_settings

    report_progress = progress or (lambda step, i, n: None)
    root = Path(root or get_settings().results_root)
    report_progress("reading parquet", 0, 3)
    tests = [load(root / t, t) for t in (test_id, other_id)]
    boards = [d.leaderboard(t) for t in tests]
    report_progress("charts", 1, 3)
    chart = charts_mod.comparison_chart(boards, [test_id, other_id])
    columns = []
    for data, board in zip(tests, boards, strict=True):
        heat = d.category_matrix(data, board)
        figure = ""
        if heat.shape[1]:
            figure = page._figure(
                charts_mod.heatmap_chart(
                    heat, f"heatmap-category-{len(columns)}", "Mean score by category", "category"
                )
            )
        columns.append(
            f"<div><h3>test <code>{escape(data.test_id)}</code></h3>"
            f"{page.leaderboard_table(board)}{figure}</div>"
        )
    sections = [
        (
            "scores",
            "Scores",
            '<section id="scores"><h2>Both tests</h2><p class="lead">Mean score with 95% CI per '
            f"model in each test.</p>{page._figure(chart)}</section>",
        ),
        (
            "side-by-side",
            "Side by side",
            f'<section id="side-by-side"><div class="grid">{"".join(columns)}</div></section>',
        ),
    ]
    report_progress("writing", 2, 3)
    html = page.page(
        title=f"Glow · {test_id} vs {other_id}",
        subtitle=f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from {root}",
        chips=[(t.test_id, f"{len(t.invocations):,} invocations") for t in tests],
        sections=sections,
        details={},
        meta={"test_id": test_id, "ui_url": None},
        footer="Glow",
    )
    path = root / test_id / f"compare-{other_id}.html"
    _write(path, html.encode("utf-8"))
    charts_dir = root / test_id / CHARTS_DIR
    charts_dir.mkdir(parents=True, exist_ok=True)
    _write(charts_dir / f"compare-{other_id}.png", chart.png)
    report_progress("done", 3, 3)
    return path
