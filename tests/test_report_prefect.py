"""What the Prefect UI shows of a finished test: the flow run's INFO log lines, a readable
leaderboard table, the results summary with its chart inline and the report link, and the report
itself beside the parquet. `glow run` runs as a user runs it (a subprocess with no Prefect
logging settings of its own) against the suite's Prefect server and the bundled simulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, wait_for
from test_run_test import write_test

pytestmark = pytest.mark.usefixtures("prefect_server", "simulator")


def _flow_run_logs(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )


def _artifacts(flow_run_id: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key and not a.key.startswith("trace-")}


def test_glow_run_logs_progress_and_publishes_readable_results(
    glow_env: Path, prefect_server: str
) -> None:
    from glow.store import Store

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    env |= {"PREFECT_API_URL": prefect_server, "COLUMNS": "200"}
    command = [sys.executable, "-m", "glow.cli", "run", str(write_test(glow_env))]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The terminal stays quiet: INFO lines go to Prefect, not over the progress bar.
    assert "INFO" not in output
    test_id = re.search(r"test_id:\s+(\S+)", output).group(1)
    flow_run_id = Store.from_settings().get_test(test_id).flow_run_id
    results = glow_env / "results" / test_id
    report = results / "report.html"
    assert report.is_file() and (results / "report" / "leaderboard.png").is_file()
    assert str(report) in output.replace("\n", "")
    # Its cells link to their trace artifacts in this server's UI.
    ui = prefect_server.rstrip("/").removesuffix("/api")
    assert f'href="{ui}/artifacts/key/trace-' in report.read_text()

    # The flow run's log, read back from Prefect: start, milestones, where the results are.
    def info_lines() -> list[str]:
        lines = [log.message for log in _flow_run_logs(flow_run_id) if log.level == 20]
        return lines if any("report at" in line for line in lines) else []

    lines = wait_for(info_lines, 60, "the flow run's INFO log lines")
    assert any(re.search(rf"test {test_id} started: 18 cells \(18 to run", li) for li in lines)
    milestones = [li for li in lines if re.search(r"\d+/18 cells \(\d+%\)", li)]
    assert len(milestones) == 10 and "18/18 cells (100%)" in milestones[-1]
    assert any("invocations by status: completed 18" in li for li in lines)
    assert any(f"results in {results}" in li for li in lines)

    artifacts = wait_for(
        lambda: (
            (a := _artifacts(flow_run_id)) and {"leaderboard", "results-summary"} <= set(a) and a
        ),
        30,
        "the flow run's result artifacts",
    )
    # The leaderboard: rounded, with its CI, no test id repeated in every row.
    import json

    rows = json.loads(artifacts["leaderboard"].data)
    assert [r["model"] for r in rows][:2] and {r["rank"] for r in rows} == {1, 2}
    for row in rows:
        assert "test_id" not in row
        for key in ("mean_score", "ci95_low", "ci95_high", "mean_score_all", "pass_rate"):
            assert row[key] is None or row[key] == round(row[key], 3), (key, row[key])
        assert row["ci95_low"] <= row["mean_score"] <= row["ci95_high"]
        assert row["marker"] == ""  # nothing failed: the failure-inclusive mean is the mean
    assert test_id in artifacts["leaderboard"].description

    summary = artifacts["results-summary"].data
    assert re.search(
        r"!\[Leaderboard[^\]]*\]\(data:image/png;base64,[A-Za-z0-9+/=]{1000,}\)", summary
    )
    assert f"]({report.resolve().as_uri()})" in summary
    assert "**Total cost: $" in summary and "**Leader: sim-strong**" in summary
    assert f"]({report.resolve().as_uri()})" in artifacts["report"].data
