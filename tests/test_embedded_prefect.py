"""`glow run` without PREFECT_API_URL: the embedded Prefect server records every cell.

Runs the quickstart as a new user would (no server configured, Prefect's home in a temp dir),
with the batched task-run recording Glow gives its embedded server, then reads that server's own
SQLite database: one task run per cell plus `aggregate`, one trace artifact per cell. (At this
size the server keeps up; the lag `glow run` waits out at 1,000+ cells is measured in bench/.)
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT


def test_glow_run_on_the_embedded_server_records_every_task_run(
    glow_env: Path, simulator: Any
) -> None:
    from glow.store import Store

    home = glow_env / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), GLOW_DATA_DIR=str(glow_env), COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-m", "glow.cli", "run", "data/tests/quickstart.yaml"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=400,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "embedded Prefect server" in output and "Traceback" not in output
    test_id = re.search(r"test_id:\s+(\S+)", output).group(1)

    store = Store.from_settings()
    cells = sum(store.count_invocations(test_id).values())
    flow_run_id = store.get_test(test_id).flow_run_id
    assert cells >= 120 and flow_run_id

    with sqlite3.connect(home / "prefect.db") as db:
        task_runs = db.execute(
            "SELECT name FROM task_run WHERE flow_run_id = ?", (flow_run_id,)
        ).fetchall()
        traces = db.execute("SELECT count(*) FROM artifact WHERE key LIKE 'trace-%'").fetchone()[0]
    names = [name for (name,) in task_runs]
    assert len(names) == cells + 1, f"{len(names)} task runs recorded for {cells} cells"
    assert sum(1 for n in names if n.startswith("aggregate")) == 1
    assert traces == cells


def test_embedded_server_settings_and_a_stalled_wait(tmp_path: Path, monkeypatch: Any) -> None:
    """Glow's server defaults (recorder batched, persister and triggers off) reach the server,
    the user's environment wins over them, and a count that stops moving ends the wait early."""
    import time
    import uuid

    import httpx

    from glow.prefect_server import embedded_prefect, wait_for_task_runs

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED", "true")  # the user's choice
    for name in (
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)  # conftest sets Glow's defaults for the harness
    with embedded_prefect(tmp_path / "server.log") as url:
        services = httpx.get(f"{url}/admin/settings", timeout=30).json()["server"]["services"]
        assert services["event_persister"]["enabled"] is False
        assert services["task_run_recorder"]["batch_size"] == 200
        assert services["triggers"]["enabled"] is True

        started = time.monotonic()
        count = wait_for_task_runs(url, str(uuid.uuid4()), 3, timeout_s=120, stalled_s=2)
        assert count == 0
        assert time.monotonic() - started < 30  # the stall ended it, not the 120 s timeout
