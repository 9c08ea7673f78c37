"""`aggregate`: export a test's results and publish them to the Prefect UI.

The export itself (AggregatedResults and the parquet files, rebuilt from the store) is
`glow.results.build`; this task adds the HTML report and the artifacts: the leaderboard table,
the results summary, the report link and the regression against the previous run, and the flow
run's log lines.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from glow import comparison
from glow.results import FAILURES_MARKER
from glow.results.build import BuiltResults, build_results
from glow.store import Store


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _round(value: Any, digits: int) -> float | None:
    """A number as people read it (0.903, not 0.903333333333); None / NaN stay empty."""
    if value is None or value != value:
        return None
    return round(float(value), digits)


def leaderboard_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaderboard artifact's rows: rounded, with the 95% CI and, when the rows carry them,
    the failure-inclusive mean and pass rate (`mean_score_all`, `pass_rate_all`) and `marker`
    (a dagger where they differ); the test id is in the artifact's description, not every row.

    `rows` are `results.leaderboard` rows or the report's leaderboard (`Report.leaderboard`)."""
    out = []
    for row in rows:
        item: dict[str, Any] = {
            "rank": row.get("rank"),
            "model": row["model"],
            "agent": row["agent"],
            "n": row.get("n"),
            "completed": row.get("completed", row.get("n_completed")),
            "failed": row.get("failed", row.get("n_failed")),
            "mean_score": _round(row.get("mean_score"), 3),
            "ci95_low": _round(row.get("ci95_low"), 3),
            "ci95_high": _round(row.get("ci95_high"), 3),
            "pass_rate": _round(row.get("pass_rate"), 3),
        }
        if "mean_score_all" in row:
            item["mean_score_all"] = _round(row.get("mean_score_all"), 3)
            item["pass_rate_all"] = _round(row.get("pass_rate_all"), 3)
            marker = row.get("marker")
            if marker is None:
                pairs = [(item["mean_score"], item["mean_score_all"])]
                pairs.append((item["pass_rate"], item["pass_rate_all"]))
                marker = FAILURES_MARKER if any(a != b for a, b in pairs) else ""
            item["marker"] = marker
        if row.get("pass_at_k") is not None and row.get("pass_at_k") == row.get("pass_at_k"):
            item["pass_at_k"] = _round(row.get("pass_at_k"), 3)
        item["cost_usd"] = _round(row.get("cost_usd"), 4)
        item["latency_p50_s"] = _round(row.get("latency_p50_s"), 2)
        out.append(item)
    return out


def _leader_line(rows: list[dict[str, Any]]) -> str | None:
    best = next((r for r in rows if r.get("mean_score") is not None), None)
    if best is None:
        return None
    ci = ""
    if best.get("ci95_low") is not None and best.get("ci95_high") is not None:
        ci = f" (95% CI {best['ci95_low']:.3f} - {best['ci95_high']:.3f})"
    who = (
        best["model"]
        if len({r["agent"] for r in rows}) <= 1
        else f"{best['model']} / {best['agent']}"
    )
    return f"**Leader: {who}**, mean score {best['mean_score']:.3f}{ci}"


def cost_markdown(built: BuiltResults, report: Any = None) -> str:
    """The results summary for the Prefect UI: the leader, the leaderboard chart inline (a PNG
    data URI, which Prefect's markdown renderer shows as an image), cost totals, statuses,
    failures by error type, and where the report and the parquet files are.

    `report` is the `glow.report.Report` written for this test, or None when there is none."""
    s = built.summary
    rows = leaderboard_rows(report.leaderboard if report is not None else built.leaderboard)
    lines = [f"# Results of test `{built.test_id}`", ""]
    leader = _leader_line(rows)
    if leader:
        lines += [leader, ""]
    chart = report.charts.get("leaderboard") if report is not None else None
    if chart is not None and chart.is_file():
        encoded = base64.b64encode(chart.read_bytes()).decode("ascii")
        lines += [f"![Leaderboard: mean score with 95% CI](data:image/png;base64,{encoded})", ""]
    if report is not None:
        lines += [
            f"**Report:** [{report.path.name}]({report.path.resolve().as_uri()}) "
            f"(`{report.path}`; `glow report {built.test_id}` writes it again)",
            "",
        ]
    lines += [
        f"**Total cost: {_money(s.get('total_cost_usd'))}**",
        "",
        "| model | cost |",
        "|---|---|",
        *[f"| {m} | {_money(c)} |" for m, c in (s.get("by_model") or {}).items()],
        "",
        "| status | invocations |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(built.counts.items())],
        f"| skipped (modality) | {built.skipped} |",
        "",
    ]
    if report is not None and report.failures:
        lines += ["| error type | failed or terminated |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report.failures.items()]
        lines.append("")
    if s.get("cost_unknown_models"):
        lines.append(
            "Cost is **unknown** (no price in litellm's map and none in the test) for: "
            + ", ".join(s["cost_unknown_models"])
        )
        lines.append("")
    lines.append("Parquet files:")
    lines += [f"- `{name}`: `{path}`" for name, path in built.paths.items()]
    return "\n".join(lines)


def write_report(built: BuiltResults) -> Any:
    """The test's HTML report beside its parquet (`glow.report`), or None if drawing failed:
    the parquet files are the results, a report that cannot be drawn must not fail the test."""
    from prefect.settings import PREFECT_UI_URL

    from glow.report import build_report

    try:
        # Trace links point at the UI of the server this flow reports to (a profile's too).
        ui_url = PREFECT_UI_URL.value()
        return build_report(
            built.test_id,
            built.paths["aggregated"].parent,
            ui_url=ui_url.rstrip("/") if ui_url else None,
        )
    except Exception as exc:  # noqa: BLE001 - logged, the results stand without the page
        logging.getLogger("glow.report").warning(
            "report of test %s not written: %s", built.test_id, exc
        )
        return None


async def publish(built: BuiltResults, report: Any = None) -> None:
    """The leaderboard as a table artifact (rounded, with its CI), the summary as markdown,
    and a link artifact to the report when there is one."""
    await acreate_table_artifact(
        key="leaderboard",
        table=leaderboard_rows(report.leaderboard if report is not None else built.leaderboard),
        description=f"Leaderboard of test {built.test_id}: mean score with its 95% CI",
    )
    await acreate_markdown_artifact(
        key="results-summary",
        markdown=cost_markdown(built, report),
        description=f"Results of test {built.test_id}: leader, cost totals, report and files",
    )
    if report is not None:
        await acreate_link_artifact(
            key="report",
            link=report.path.resolve().as_uri(),
            link_text=f"report of test {built.test_id}",
            description=f"The HTML report, a file on the machine that ran the test: {report.path}",
        )


def _log_outcome(test_id: str, built: BuiltResults, report: Any) -> None:
    """What the flow run's log says once the results are written."""
    logger = get_run_logger()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(built.counts.items()))
    logger.info("test %s: invocations by status: %s", test_id, counts or "none")
    if report is not None and report.failures:
        kinds = ", ".join(f"{k} {v}" for k, v in report.failures.items())
        logger.info("test %s: failed or terminated by error type: %s", test_id, kinds)
    directory = built.paths["aggregated"].parent
    logger.info("test %s: results in %s", test_id, directory)
    if report is not None:
        logger.info("test %s: report at %s (%.1f s to draw)", test_id, report.path, report.seconds)


@task(name="aggregate", cache_policy=NO_CACHE, persist_result=False)
async def aggregate(test_id: str) -> dict[str, Any]:
    """Rebuild AggregatedResults, write the report, publish the leaderboard, summary and
    report artifacts."""
    built = await asyncio.to_thread(build_results, Store.from_settings(), test_id)
    report = await asyncio.to_thread(write_report, built)
    await publish(built, report)
    if built.regression is not None:
        await acreate_markdown_artifact(
            key="regression",
            markdown=comparison.regression_markdown(built.regression),
            description=f"Test {built.test_id} against {built.base_test_id}",
        )
    _log_outcome(test_id, built, report)
    paths = {k: str(v) for k, v in built.paths.items()}
    if report is not None:
        paths["report"] = str(report.path)
    return {"paths": paths, "summary": built.summary}
