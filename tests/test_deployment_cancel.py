"""Cancel a deployment-served run-test flow run the way the Prefect UI does.

A real `deployments/serve.py` process (a Prefect runner) picks the run up; the test waits until
some cells completed, sets the flow run Cancelling (the UI's call), and checks the store: no
invocation left running or queued, completed ones keep their scores, the rest terminated, and
the parquet files agree with the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import FAKE_KEY, ROOT, wait_for


@pytest.fixture(scope="module")
def slow_simulator() -> Any:
    from glow.simulator import Profile, SimulatorProcess

    with SimulatorProcess(profiles={"sim-slow": Profile(1.0, 0.5, kind="echo")}) as sim:
        yield sim


def test_cancel_a_served_run_leaves_nothing_unfinished(
    tmp_path: Path, prefect_server: str, slow_simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    from glow.settings import get_settings
    from glow.store import Store

    db = f"sqlite:///{tmp_path / 'glow.db'}"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "GLOW_SIM_API_KEY": FAKE_KEY,
        "GLOW_DATABASE_URL": db,
        "GLOW_RESULTS_DIR": str(tmp_path / "results"),
        "PYTHONPATH": str(ROOT),
    }
    monkeypatch.setenv("GLOW_DATABASE_URL", db)
    monkeypatch.setenv("GLOW_RESULTS_DIR", str(tmp_path / "results"))
    get_settings.cache_clear()

    scenarios = [
        {"id": f"s{i:02d}", "input": f"say {i}", "reference": f"say {i}"} for i in range(40)
    ]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenarios))
    spec = {
        "name": "served-cancel",
        "scenarios": str(tmp_path / "s.yaml"),
        "models": [
            {
                "name": "sim-slow",
                "model": "openai/sim-slow",
                "api_base": slow_simulator.url,
                "api_key_env": "GLOW_SIM_API_KEY",
                "prices": {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7},
            }
        ],
        "rubric": "exact_answer",
        "concurrency": 2,
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec))

    server = subprocess.Popen(
        [sys.executable, "deployments/serve.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:

        def deployed() -> bool:
            with get_client(sync_client=True) as client:
                try:
                    client.read_deployment_by_name("run-test/local")
                    return True
                except Exception:  # noqa: BLE001 - not registered yet
                    return False

        wait_for(deployed, 60, "the served deployment")
        flow_run = run_deployment(
            "run-test/local", parameters={"path": str(tmp_path / "test.yaml")}, timeout=0
        )
        store = Store.from_settings()

        def some_completed() -> str | None:
            test_id = store.test_for_flow_run(str(flow_run.id))
            if test_id and store.count_invocations(test_id).get("completed", 0) >= 3:
                return test_id
            return None

        test_id = wait_for(some_completed, 90, "a few completed cells")
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, state=Cancelling(), force=True)

        def settled() -> dict[str, int] | None:
            counts = store.count_invocations(test_id)
            return None if counts.get("running") or counts.get("queued") else counts

        counts = wait_for(settled, 45, "no invocation running or queued")
        assert counts.get("completed", 0) >= 3 and counts.get("terminated", 0) >= 1, counts
        assert set(counts) <= {"completed", "terminated"}, counts
        for inv in store.list_invocations(test_id, status="completed"):
            assert inv.score is not None
        with get_client(sync_client=True) as client:
            wait_for(
                lambda: client.read_flow_run(flow_run.id).state.is_cancelled(),
                45,
                "the flow run to be Cancelled",
            )
        folder = tmp_path / "results" / test_id
        wait_for(lambda: (folder / "invocations.parquet").exists(), 30, "the parquet files")
        invocations = pd.read_parquet(folder / "invocations.parquet")
        assert len(invocations) == sum(counts.values())
        assert (invocations["status"] == "completed").sum() == counts["completed"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        print((server.stdout.read() if server.stdout else "")[-4000:])  # shown when it fails
        get_settings.cache_clear()
