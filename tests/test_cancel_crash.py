"""A `glow run` cancelled from the Prefect UI, and a `glow run` killed with SIGKILL then resumed.

Real parts only: `python -m glow.cli run` as a subprocess against the session Prefect server, a
separate simulator process with 1 s latency (so a small quickstart-derived test runs > 10 s at
concurrency 2), and a real SQLite store shared by the subprocess and the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from conftest import FAKE_KEY, ROOT, wait_for

CATEGORIES = ("exact", "multiple_choice", "free_text", "tool_use")


@pytest.fixture(scope="module")
def slow_sim() -> Any:
    from glow.simulator import SimulatorProcess

    with SimulatorProcess(scenarios=[ROOT / "data" / "scenarios"], latency=1.0) as sim:
        yield sim


def _write_test(tmp: Path, sim: Any, per_category: int = 3) -> Path:
    """The quickstart test, cut to a few scenarios per category, at concurrency 2."""
    lines = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    picked: list[dict[str, Any]] = []
    for category in CATEGORIES:
        picked += [r for r in rows if r["metadata"]["category"] == category][:per_category]
    (tmp / "scenarios.jsonl").write_text("\n".join(json.dumps(s) for s in picked) + "\n")
    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    spec["scenarios"] = str(tmp / "scenarios.jsonl")
    spec["concurrency"] = 2
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _env(tmp: Path, prefect_server: str, sim: Any) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "GLOW_SIM_API_KEY": FAKE_KEY,
        "GLOW_DATABASE_URL": f"sqlite:///{tmp / 'glow.db'}",
        "GLOW_RESULTS_DIR": str(tmp / "results"),
        "GLOW_SIMULATOR_URL": sim.url,
        "PYTHONPATH": str(ROOT),
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "glow.cli", "run", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _some_completed(store: Any, minimum: int = 3) -> Any:
    def check() -> str | None:
        try:
            tests = store.list_tests()
        except Exception:  # noqa: BLE001 - tables not created yet
            return None
        if not tests:
            return None
        test_id = tests[0].test_id
        counts = store.count_invocations(test_id)
        return test_id if counts.get("completed", 0) >= minimum else None

    return check


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    print(log.read_text(errors="replace")[-4000:])  # shown when a test fails


def test_ui_cancel_of_a_glow_run(tmp_path: Path, prefect_server: str, slow_sim: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    from glow.store import Store

    env = _env(tmp_path, prefect_server, slow_sim)
    log = tmp_path / "run.log"
    yaml_path = _write_test(tmp_path, slow_sim)
    proc = _start([str(yaml_path)], env, log)
    try:
        store = Store(env["GLOW_DATABASE_URL"])
        test_id = wait_for(_some_completed(store), 60, "a few completed cells")
        counts = store.count_invocations(test_id)
        assert counts.get("queued", 0) + counts.get("running", 0) >= 3, counts  # not finished
        flow_run_id = store.get_test(test_id).flow_run_id
        assert flow_run_id
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, state=Cancelling(), force=True)
        cancelled_at = time.monotonic()
        proc.wait(timeout=15)
        exit_s = time.monotonic() - cancelled_at
        print(f"exited {exit_s:.1f}s after cancel, rc={proc.returncode}")

        counts = store.count_invocations(test_id)
        assert not counts.get("running") and not counts.get("queued"), counts
        assert set(counts) <= {"completed", "terminated", "skipped"}, counts
        assert counts.get("completed", 0) >= 3 and counts.get("terminated", 0) >= 1, counts
        for inv in store.list_invocations(test_id, status="completed"):
            assert inv.score is not None and inv.scores
        folder = tmp_path / "results" / test_id
        invocations = pd.read_parquet(folder / "invocations.parquet")
        assert len(invocations) == sum(counts.values())
        assert (invocations["status"] == "completed").sum() == counts["completed"]
        assert (invocations["status"] == "terminated").sum() == counts["terminated"]
        assert (folder / "aggregated.parquet").exists()

        # A cancel is no crash: its own exit code, what happened, and how to continue.
        output = log.read_text(errors="replace")
        assert proc.returncode == 3, output
        assert "Traceback" not in output
        assert "Crash detected" not in output  # the abandoned cells are no alarm in the terminal
        assert f"test {test_id} cancelled" in output
        assert f"{counts['completed']} completed" in output
        assert f"{counts['terminated']} terminated" in output
        assert str(folder) in output
        assert f"glow run {yaml_path} --resume {test_id}" in output
    finally:
        _stop(proc, log)


def test_kill_9_mid_run_then_resume(tmp_path: Path, prefect_server: str, slow_sim: Any) -> None:
    from glow.store import Store

    env = _env(tmp_path, prefect_server, slow_sim)
    yaml_path = _write_test(tmp_path, slow_sim)
    log = tmp_path / "run.log"
    proc = _start([str(yaml_path)], env, log)
    try:
        store = Store(env["GLOW_DATABASE_URL"])
        test_id = wait_for(_some_completed(store), 60, "a few completed cells")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.monotonic()
    finally:
        _stop(proc, log)

    before = {i.invocation_id: i for i in store.list_invocations(test_id)}
    done = {k: v for k, v in before.items() if v.status.value == "completed"}
    stale = [k for k, v in before.items() if v.status.value == "running"]
    assert done and len(done) < len(before), {k: v.status for k, v in before.items()}
    assert stale, "a kill mid-run leaves running invocations behind"
    requests_before = _total_requests(slow_sim)

    resume_log = tmp_path / "resume.log"
    resumed = _start([str(yaml_path), "--resume", test_id], env, resume_log)
    try:
        resumed.wait(timeout=150)
    finally:
        _stop(resumed, resume_log)
    print(f"resume finished {time.monotonic() - killed_at:.1f}s after the kill")
    assert resumed.returncode == 0
    # The dead runner was on this host: its cells are reclaimed at once, not after its 60 s
    # lease (the resumed run itself takes ~30 s here).
    assert time.monotonic() - killed_at < 55, "the dead runner's lease was waited out"

    after = {i.invocation_id: i for i in store.list_invocations(test_id)}
    assert after.keys() == before.keys()
    statuses = {i.status.value for i in after.values()}
    assert statuses <= {"completed", "skipped"}, statuses
    for inv_id, inv in done.items():
        now = after[inv_id]
        assert now.attempts == inv.attempts, inv_id  # not called again
        assert (now.score, now.passed, now.finished_at) == (inv.score, inv.passed, inv.finished_at)
        assert now.scores == inv.scores
    for inv_id in stale:
        assert after[inv_id].status.value == "completed"  # the dead runner's cell was reclaimed
        assert after[inv_id].attempts == before[inv_id].attempts + 1
    # only the cells not completed before were called again (each >= 1 request)
    assert _total_requests(slow_sim) - requests_before >= len(after) - len(done) - sum(
        1 for i in after.values() if i.status.value == "skipped"
    )

    folder = tmp_path / "results" / test_id
    invocations = pd.read_parquet(folder / "invocations.parquet")
    assert invocations["invocation_id"].is_unique
    assert len(invocations) == len(after)
    assert (invocations["status"] == "completed").sum() == sum(
        1 for i in after.values() if i.status.value == "completed"
    )


def _total_requests(sim: Any) -> int:
    stats = httpx.get(f"{sim.base_url}/stats").json()
    return sum(m["requests"] for m in stats["models"].values())
