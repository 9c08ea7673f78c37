"""The HTML report: its numbers against hand-computed values, and the page itself opened in a
real headless Chromium with the network off (tests/browser.py), counting what each chart drew.

The results are real parquet files written by Glow's own results code from chosen rows
(tests/report_fixtures.py), so every expected number below can be worked out by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import report_fixtures as fx
from browser import Browser, chromium_path
from conftest import ROOT

from glow.progress import Milestones
from glow.report import build_comparison, build_report
from glow.report import data as d

N_MODELS = len(fx.MODELS)
CATEGORIES = sorted({category for category, _ in fx.SCENARIOS.values()})


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = fx.write_test(tmp_path, "t1")
    fx.write_pairwise(out)
    fx.write_regression(out, "t1", "t0")
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_path()
    if binary is None:
        # CI installs Debian's chromium (.ci/run); only a machine that has none and cannot
        # install it skips these.
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with Browser(binary) as instance:
        yield instance


# --------------------------------------------------------------------------- numbers by hand


def test_leaderboard_and_failure_inclusive_scores_by_hand(results: Path) -> None:
    board = d.leaderboard(d.load(results, "t1")).set_index("model")
    # alpha: 1, 1, .5, 1, 0 -> .7; gamma completed 1, 0, .5 -> .5, with its failed cell as 0
    # (its terminated one left out: stopped, not failed) -> 1.5/4; beta completed 1, 0, 0 ->
    # 1/3, with its 2 failures as 0 -> 1/5.
    assert list(board.index) == ["alpha", "gamma", "beta"]
    assert board["mean_score"].tolist() == pytest.approx([0.7, 0.5, 1 / 3])
    assert board["mean_score_all"].tolist() == pytest.approx([0.7, 0.375, 0.2])
    # passes (score >= .5): alpha 4/5, gamma 2/3 and 2/4 counting failures, beta 1/3 and 1/5.
    assert board["pass_rate_all"].tolist() == pytest.approx([0.8, 0.5, 0.2])
    # cost per pass: alpha 5 calls x $0.01 / 4 passes; beta 5 x $0.002 / 1.
    assert board.loc["alpha", "cost_per_pass_usd"] == pytest.approx(0.0125)
    assert board.loc["beta", "cost_per_pass_usd"] == pytest.approx(0.01)
    assert d.differs(0.7, 0.7) is False and d.differs(0.5, 0.3) is True


def test_failure_inclusive_columns_are_used_when_aggregated_has_them(results: Path) -> None:
    data = d.load(results, "t1")
    data.aggregated["mean_score_all"] = 0.123
    data.aggregated["pass_rate_all"] = 0.456
    board = d.leaderboard(data)
    assert set(board["mean_score_all"]) == {0.123} and set(board["pass_rate_all"]) == {0.456}


def test_pareto_frontier_by_hand() -> None:
    # alpha .05/.7, beta .01/.333, gamma .1/.5 (dearer and worse than alpha): beta then alpha.
    assert d.pareto_frontier([0.05, 0.01, 0.1], [0.7, 1 / 3, 0.5]) == [1, 0]
    # Same cost: only the better; same score: only the cheaper; unknown cost: left out.
    assert d.pareto_frontier([1.0, 1.0, 2.0, None], [0.5, 0.6, 0.6, 0.9]) == [1]
    assert d.pareto_frontier([3.0, 1.0, 2.0], [0.9, 0.2, 0.5]) == [1, 2, 0]
    assert d.pareto_frontier([], []) == []


def test_heatmaps_failures_and_matrix_flags_by_hand(results: Path) -> None:
    data = d.load(results, "t1")
    board = d.leaderboard(data)
    categories = d.category_matrix(data, board)
    assert list(categories.columns) == CATEGORIES and list(categories.index) == list(board["label"])
    assert categories.loc["alpha", "text"] == pytest.approx(0.75)  # (.5 + 1) / 2
    assert pd.isna(categories.loc["beta", "text"])  # both failed: no score
    standards = d.standard_matrix(data, board)
    assert list(standards.columns) == fx.STANDARDS
    assert standards.loc["gamma", "judge"] == pytest.approx(0.5)

    failures = d.failures(data, board)
    assert failures.loc["beta"].to_dict() == {"Timeout": 1, "RateLimitError": 1, "terminated": 0}
    assert failures.loc["gamma"].to_dict() == {"Timeout": 1, "RateLimitError": 0, "terminated": 1}
    assert failures.loc["alpha"].sum() == 0
    assert list(failures.columns)[0] == "Timeout"  # most frequent first

    matrix = d.scenario_matrix(data, board)
    flags = {r["scenario_id"]: (r["failing"], r["disagree"]) for r in matrix.rows}
    # s1 all pass; s2-s4 one passes, another fails or errs; s5 nobody passes (no disagreement).
    assert flags == {
        "s1": (False, False),
        "s2": (True, True),
        "s3": (True, True),
        "s4": (True, True),
        "s5": (True, False),
    }
    assert (matrix.n_failing, matrix.n_disagree, matrix.capped) == (4, 3, False)
    s4 = next(r for r in matrix.rows if r["scenario_id"] == "s4")
    assert [c["outcome"] for c in s4["cells"]] == ["pass", "error", "error"]


def test_milestones_every_tenth() -> None:
    milestones = Milestones(140)
    lines = [milestones.update(i, "completed") for i in range(1, 141)]
    assert [i + 1 for i, line in enumerate(lines) if line] == [14 * k for k in range(1, 11)]
    assert lines[41] == "42/140 cells (30%): completed 42"
    resumed = Milestones(5, done=2)  # a resumed test: lines from where it stood
    assert [resumed.update(n, s) for n, s in ((3, "failed"), (4, "completed"))] == [
        "3/5 cells (60%): failed 1",
        "4/5 cells (80%): completed 1, failed 1",
    ]


# --------------------------------------------------------------------------- the page in Chromium


def _count(browser: Browser, selector: str) -> int:
    return browser.evaluate(f"document.querySelectorAll({selector!r}).length")


def _visible_rows(browser: Browser) -> list[str]:
    return browser.evaluate(
        "Array.from(document.querySelectorAll('#matrix-table tbody tr'))"
        ".filter(tr => !tr.hidden && tr.offsetParent !== null)"
        ".map(tr => tr.querySelector('th').textContent.slice(0, 2))"
    )


def test_report_renders_every_chart_offline_in_chromium(results: Path, browser: Browser) -> None:
    report = build_report("t1", results, ui_url="http://127.0.0.1:4200")
    assert report.path == results / "report.html"
    html = report.path.read_text()
    assert "<link" not in html and "<script src" not in html and "@import" not in html

    browser.open(report.path)
    assert browser.evaluate("document.body.dataset.ready") == "1"
    # Nothing but the file itself was requested, and no script failed.
    assert browser.requested_urls() == [report.path.resolve().as_uri()]
    assert browser.exceptions() == []

    # Every chart is drawn with a real size on the page.
    sizes = browser.evaluate(
        "Array.from(document.querySelectorAll('svg.chart')).map(s => "
        "[s.dataset.chart, Math.round(s.getBoundingClientRect().width),"
        " Math.round(s.getBoundingClientRect().height)])"
    )
    names = [name for name, _, _ in sizes]
    assert names == [
        "leaderboard",
        "cost",
        "latency",
        "heatmap-category",
        "heatmap-standard",
        "failures",
        "pairwise",
        "regression",
    ]
    assert all(w > 200 and h > 100 for _, w, h in sizes), sizes
    assert set(report.charts) == set(names)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report.charts.values())

    # One mark per model x agent (and per category / standard), as the data has them.
    assert _count(browser, "[id^='leaderboard-bar-']") == N_MODELS
    assert _count(browser, "[id^='leaderboard-ci-']") == N_MODELS
    assert _count(browser, "[id^='leaderboard-all-']") == 2  # gamma and beta differ
    assert _count(browser, "[id^='cost-point-']") == N_MODELS
    assert _count(browser, "#cost-frontier") == 1
    assert _count(browser, "[id^='latency-point-']") == N_MODELS
    assert _count(browser, "[id^='heatmap-category-cell-']") == N_MODELS * len(CATEGORIES)
    assert _count(browser, "[id^='heatmap-standard-cell-']") == N_MODELS * len(fx.STANDARDS)
    assert _count(browser, "[id^='failures-bar-']") == N_MODELS * 3  # 3 error types
    assert _count(browser, "[id^='pairwise-row-']") == 2  # the overall rows only
    assert _count(browser, "[id^='regression-row-']") == 2
    assert _count(browser, "#leaderboard-table tbody tr") == N_MODELS
    assert _count(browser, "#matrix-table thead th") == 1 + N_MODELS
    assert _count(browser, "#matrix-table td.cell[data-inv]") == 15
    assert browser.evaluate("document.querySelector('#cost .lead b').textContent") == "beta, alpha"

    # The matrix filter: by the URL fragment, and by clicking.
    assert _visible_rows(browser) == ["s1", "s2", "s3", "s4", "s5"]
    browser.open(report.path, "filter=failures")
    assert _visible_rows(browser) == ["s2", "s3", "s4", "s5"]
    browser.open(report.path, "filter=disagree")
    assert _visible_rows(browser) == ["s2", "s3", "s4"]
    browser.evaluate("document.querySelector('input[name=filter][value=all]').click()")
    assert len(_visible_rows(browser)) == 5
    browser.evaluate("document.querySelector('input[name=filter][value=failures]').click()")
    assert _visible_rows(browser) == ["s2", "s3", "s4", "s5"]
    assert browser.evaluate("location.hash") == "#filter=failures"

    # An error cell is labelled with its error type, or its status when it has none.
    badge = "document.querySelector(\"td.cell[data-inv='t1-{}'] .badge\").textContent"
    assert browser.evaluate(badge.format("s3-beta")) == "RateLimitError"
    assert browser.evaluate(badge.format("s4-gamma")) == "terminated"

    # Outputs are text, never markup: the hostile one is shown, not run.
    assert browser.evaluate("window.pwned") is None
    browser.evaluate("document.querySelector(\"td.cell[data-inv='t1-s1-alpha']\").click()")
    assert browser.evaluate("document.getElementById('d-output').textContent") == fx.HOSTILE_OUTPUT
    browser.evaluate("document.getElementById('cell-detail').close()")

    # A cell links to its trace artifact and opens its details.
    cell = "#matrix-table td.cell[data-inv='t1-s3-beta']"
    assert browser.evaluate(f'document.querySelector("{cell} a.trace").href') == (
        "http://127.0.0.1:4200/artifacts/key/trace-t1-s3-beta"
    )
    browser.evaluate(f'document.querySelector("{cell}").click()')
    assert browser.evaluate("document.getElementById('cell-detail').open") is True
    assert browser.evaluate("document.getElementById('d-key').textContent") == "trace-t1-s3-beta"
    assert "RateLimitError" in browser.evaluate("document.getElementById('d-error').textContent")
    assert "invocation_trace" in browser.evaluate("document.getElementById('d-cli').textContent")


def test_large_test_keeps_a_usable_page(tmp_path: Path, browser: Browser) -> None:
    """12,000 invocations: the matrix keeps the rows that matter, says so, and still filters."""
    scenarios = {}
    for i in range(4_000):
        if i % 10 == 0:  # every tenth scenario: alpha passes, beta fails (a disagreement)
            cells = {"alpha": ("completed", 1.0, None), "beta": ("completed", 0.0, None)}
        else:
            cells = {"alpha": ("completed", 1.0, None), "beta": ("completed", 1.0, None)}
        cells["gamma"] = ("completed", 1.0, None)
        scenarios[f"q{i:05d}"] = (f"c{i % 7}", cells)
    out = fx.write_test(tmp_path, "big", fx.invocation_rows("big", scenarios))
    report = build_report("big", out)
    kept = d.MAX_MATRIX_CELLS // N_MODELS
    assert (report.matrix_rows, report.matrix_total_rows) == (kept, 4_000)
    assert report.path.stat().st_size < 8_000_000

    browser.open(report.path, "filter=disagree")
    assert browser.exceptions() == []
    assert "Showing 2,000 of 4,000 scenario rows" in browser.evaluate(
        "document.getElementById('matrix-capped').textContent"
    )
    # All 400 disagreements are among the rows kept, and the filter shows exactly them.
    assert len(_visible_rows(browser)) == 400
    assert _count(browser, "[id^='heatmap-category-cell-']") == N_MODELS * 7


def test_comparison_page_in_chromium(tmp_path: Path, browser: Browser) -> None:
    fx.write_test(tmp_path, "t1")
    rows = [r for r in fx.invocation_rows("t2") if r["model"] != "gamma"]
    fx.write_test(tmp_path, "t2", rows)
    path = build_comparison("t1", "t2", root=tmp_path)
    assert path == tmp_path / "t1" / "compare-t2.html"
    browser.open(path)
    assert browser.exceptions() == []
    # One bar per test per model of either test (gamma is absent from t2: an empty bar).
    assert _count(browser, "[id^='compare-bar-0-']") == N_MODELS
    assert _count(browser, "[id^='compare-bar-1-']") == N_MODELS
    assert _count(browser, "[id^='heatmap-category-0-cell-']") == N_MODELS * len(CATEGORIES)
    assert _count(browser, "[id^='heatmap-category-1-cell-']") == (N_MODELS - 1) * len(CATEGORIES)
    assert _count(browser, "table#leaderboard-table") == 2


# --------------------------------------------------------------------------- the command


def test_glow_report_command(results: Path) -> None:
    env = {**os.environ, "GLOW_RESULTS_DIR": str(results.parent)}
    command = [sys.executable, "-m", "glow.cli", "report"]
    done = subprocess.run(
        [*command, "t1"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(results / "report.html") in done.stdout.replace("\n", "")
    assert (results / "report" / "leaderboard.png").is_file()

    missing = subprocess.run(
        [*command, "nope"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert missing.returncode == 2
    assert "no aggregated.parquet for test 'nope'" in missing.stderr
    assert "glow aggregate nope" in missing.stderr


def test_leaderboard_artifact_rows_are_rounded_without_test_ids(results: Path) -> None:
    from tasks.aggregate import FAILURES_MARKER, leaderboard_rows

    report = build_report("t1", results)
    rows = leaderboard_rows(report.leaderboard)
    assert [r["model"] for r in rows] == ["alpha", "gamma", "beta"]
    assert all("test_id" not in r for r in rows)
    beta = rows[2]
    # 1/3 -> 0.333, with failures as 0 -> 0.2; pass rate 1/3 -> 0.333 and 1/5.
    assert (beta["mean_score"], beta["mean_score_all"]) == (0.333, 0.2)
    assert (beta["pass_rate"], beta["pass_rate_all"]) == (0.333, 0.2)
    assert (rows[1]["mean_score_all"], rows[1]["pass_rate_all"]) == (0.375, 0.5)
    assert [r["marker"] for r in rows] == ["", FAILURES_MARKER, FAILURES_MARKER]
    assert rows[0]["cost_usd"] == 0.05 and rows[0]["rank"] == 1
    # results.leaderboard rows (no failure-inclusive columns) round the same way.
    plain = leaderboard_rows([{"model": "m", "agent": "a", "mean_score": 0.903333333333}])
    assert plain[0]["mean_score"] == 0.903 and "marker" not in plain[0]


def test_failure_inclusive_leaves_grading_failures_out(tmp_path: Path) -> None:
    """A judge that failed says nothing about the model: that invocation is not a 0."""
    rows = fx.invocation_rows("t3")
    for row in rows:
        if row["invocation_id"] == "t3-s3-beta":
            row["error_type"] = "judge_error"
    data = d.load(fx.write_test(tmp_path, "t3", rows), "t3")
    data.aggregated = data.aggregated.drop(
        columns=["mean_score_all", "pass_rate_all"], errors="ignore"
    )
    board = d.failure_inclusive(data.invocations).set_index("model")
    # beta: completed 1, 0, 0 and its one model failure (s4) as 0: 1/4.
    assert board.loc["beta", "mean_score_all"] == pytest.approx(0.25)
    assert board.loc["beta", "n_all"] == 4
