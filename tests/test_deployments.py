"""The production path as a new user runs it: deployments, work pool, workers, schedules, shards.

Real parts: the session's Prefect server (prefect_test_harness), a real `process` work pool,
`prefect deploy` of deployments/prefect.yaml run by the real CLI from the project root, real
`prefect worker start` subprocesses started outside the project, `deployments/serve.py` as a
real runner, the bundled simulator that the flows start themselves, and a PostgreSQL store in a
database of its own. The children get an environment built from nothing: no GLOW_SIMULATOR_URL,
no GLOW_PROJECT_DIR; only the store's location (GLOW_DATABASE_URL, GLOW_RESULTS_DIR, the
README's settings) so the run lands in this test's folder and database.

These tests are slow (a worker polls, a flow run starts a process): few, sharing one server,
one pool and two workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import FAKE_KEY, ROOT, wait_for
from test_store import PG_ADMIN, _postgres_available

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")

pytestmark = pytest.mark.skipif(not _postgres_available(), reason="no PostgreSQL at 127.0.0.1")


def child_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """An environment built from nothing, as a new user's shell has (plus the given settings)."""
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(home)),
        "PREFECT_HOME": str(home / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # How often a worker asks the pool for work (10 s by default): keeps the test short.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        **extra,
    }
    assert not any(k.startswith("GLOW_SIM") or k == "GLOW_PROJECT_DIR" for k in env)
    return env


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    from glow.store import Store

    name = f"glow_deploy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        Store(url).engine.dispose()  # its tables exist before any worker connects
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pool(
    prefect_server: str, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The `glow` process pool, the deployments of prefect.yaml, and two workers on the pool."""
    home = tmp_path_factory.mktemp("deploy")
    results = home / "results"
    env = child_env(
        prefect_server,
        home,
        GLOW_DATABASE_URL=pg_url,
        GLOW_RESULTS_DIR=str(results),
        SLOW_SIM_KEY=FAKE_KEY,  # the key variable slow_test's model names
    )
    created = cli(["work-pool", "create", "glow", "--type", "process"], env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = cli(
        ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], env
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    elsewhere = home / "elsewhere"  # a worker started outside the project
    elsewhere.mkdir()
    workers = [
        start([PREFECT, "worker", "start", "--pool", "glow"], env, elsewhere, home / f"w{i}.log")
        for i in range(2)
    ]
    try:
        yield {"env": env, "home": home, "results": results, "db": pg_url, "workers": workers}
    finally:
        for worker in workers:
            stop(worker)
        for i in range(2):
            print(f"--- worker {i}\n" + (home / f"w{i}.log").read_text()[-3000:])


def _store(url: str) -> Any:
    from glow.store import Store

    return Store(url)


def _finished_test(store: Any, flow_run_id: str) -> str:
    test_id = store.test_for_flow_run(flow_run_id)
    assert test_id, f"no test recorded for flow run {flow_run_id}"
    return test_id


def _flow_run_id(output: str) -> str:
    for line in output.splitlines():
        if "UUID:" in line:
            return line.split("UUID:", 1)[1].strip()
    raise AssertionError(f"no flow run UUID in:\n{output}")


def _check_results(pool: dict[str, Any], test_id: str, cells: int) -> pd.DataFrame:
    store = _store(pool["db"])
    counts = store.count_invocations(test_id)
    assert sum(counts.values()) == cells and not counts.get("queued"), counts
    assert not counts.get("running"), counts
    invocations = pd.read_parquet(pool["results"] / test_id / "invocations.parquet")
    assert len(invocations) == cells
    assert set(invocations["status"]) <= {"completed", "failed"}
    assert (invocations["status"] == "completed").sum() >= cells // 2
    store.engine.dispose()
    return invocations


QUICKSTART_CELLS = 70 * 2 - 4  # 70 scenarios x 2 models, less sim-fast's 4 vision cells


def test_prefect_yaml_deployment_runs_the_quickstart_through_a_worker(
    pool: dict[str, Any],
) -> None:
    done = cli(["deployment", "run", "run-test/quickstart", "--watch"], pool["env"], 600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Completed" in output, output
    test_id = _finished_test(_store(pool["db"]), _flow_run_id(output))
    _check_results(pool, test_id, QUICKSTART_CELLS)


def test_nightly_schedule_is_registered(pool: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("run-test/quickstart-nightly")
    assert nightly.parameters == {"path": "data/tests/quickstart.yaml"}
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [
        ("0 2 * * *", "UTC", True)
    ]


@pytest.mark.parametrize(
    ("param", "field"),
    [("shards=two", "shards"), ("shards=0", "shards"), ("shard=2", "shard")],
)
def test_invalid_parameters_are_refused_naming_the_field(
    pool: dict[str, Any], param: str, field: str
) -> None:
    done = cli(["deployment", "run", "run-test/quickstart", "--param", param], pool["env"])
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"'{field}'" in output or f"{field}:" in output, output
    assert "Created flow run" not in output, output


def test_two_shards_on_two_workers_run_every_cell_exactly_once(pool: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    done = cli(
        ["deployment", "run", "run-test/quickstart", "--param", "shards=2", "--watch"],
        pool["env"],
        600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Completed" in output, output
    parent = _flow_run_id(output)
    store = _store(pool["db"])
    test_id = _finished_test(store, parent)
    _check_results(pool, test_id, QUICKSTART_CELLS)
    runs = {
        i.invocation_id: len(store.get_invocation(i.invocation_id).runs)
        for i in store.list_invocations(test_id)
    }
    assert set(runs.values()) == {1}, {k: v for k, v in runs.items() if v != 1}
    with get_client(sync_client=True) as client:
        shards = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"glow-parent-{parent}"]))
        )
        names = {client.read_flow(s.flow_id).name for s in shards}
    assert len(shards) == 2 and names == {"run-shard"}, shards
    assert all(s.state.is_completed() for s in shards), [s.state for s in shards]
    store.engine.dispose()


@pytest.fixture(scope="module")
def slow_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A test slow enough to cancel or kill a worker in the middle: 1 s a call, 2 at a time."""
    import yaml

    from glow.simulator import Profile, SimulatorProcess

    folder = tmp_path_factory.mktemp("slow")
    scenarios = [
        {"id": f"s{i:02d}", "input": f"say {i}", "reference": f"say {i}"} for i in range(40)
    ]
    (folder / "s.yaml").write_text(yaml.safe_dump(scenarios))
    with SimulatorProcess(profiles={"sim-slow": Profile(1.0, 1.0, kind="echo")}) as sim:
        spec = {
            "name": "slow-shards",
            "scenarios": str(folder / "s.yaml"),
            "models": [
                {
                    "name": "sim-slow",
                    "model": "openai/sim-slow",
                    "api_base": sim.url,
                    "api_key_env": "SLOW_SIM_KEY",
                    "prices": {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7},
                }
            ],
            "rubric": "exact_answer",
            "concurrency": 2,
        }
        (folder / "test.yaml").write_text(yaml.safe_dump(spec))
        yield {"path": str(folder / "test.yaml"), "cells": len(scenarios), "sim": sim}


def _ancestors(pid: int) -> list[int]:
    """`pid` and its parent processes, from /proc."""
    chain = []
    while pid > 1:
        chain.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return chain


def _shard_runs(parent: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"glow-parent-{parent}"]))
        )


def test_cancelling_the_parent_cancels_its_shards(
    pool: dict[str, Any], slow_test: dict[str, Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    parameters = {"path": slow_test["path"], "shards": 2}
    parent = run_deployment("run-test/quickstart", parameters=parameters, timeout=0)
    store = _store(pool["db"])

    def shards_working() -> str | None:
        runs = _shard_runs(str(parent.id))
        test_id = store.test_for_flow_run(str(parent.id))
        if len(runs) == 2 and all(r.state.is_running() for r in runs) and test_id:
            if store.count_invocations(test_id).get("completed", 0) >= 2:
                return test_id
        return None

    test_id = wait_for(shards_working, 180, "two running shards with completed cells")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(parent.id, state=Cancelling(), force=True)  # the UI's Cancel
        wait_for(
            lambda: all(r.state.is_cancelled() for r in _shard_runs(str(parent.id))),
            90,
            "both shards Cancelled",
        )
        wait_for(lambda: client.read_flow_run(parent.id).state.is_final(), 90, "the parent to end")
        assert client.read_flow_run(parent.id).state.is_cancelled()
    counts = wait_for(
        lambda: (lambda c: None if c.get("running") or c.get("queued") else c)(
            store.count_invocations(test_id)
        ),
        60,
        "no invocation running or queued",
    )
    assert counts.get("completed", 0) >= 2 and counts.get("terminated", 0) >= 1, counts
    store.engine.dispose()


def test_a_shard_whose_worker_dies_is_taken_over(
    pool: dict[str, Any], slow_test: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent runs in this process; one shard's worker is killed (with its flow run)."""
    import threading

    import httpx

    from flows.run_test import run_test_sync
    from glow.settings import get_settings
    from glow.sharding import shard_of

    monkeypatch.setenv("GLOW_DATABASE_URL", pool["db"])
    monkeypatch.setenv("GLOW_RESULTS_DIR", str(pool["results"]))
    monkeypatch.setenv("SLOW_SIM_KEY", FAKE_KEY)
    get_settings.cache_clear()
    sim = slow_test["sim"]
    httpx.post(f"{sim.base_url}/stats/reset")
    outcome: dict[str, Any] = {}

    def parent() -> None:
        try:
            outcome["result"] = run_test_sync(path=slow_test["path"], shards=2)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=parent)
    thread.start()
    store = _store(pool["db"])
    workers = {w.pid: w for w in pool["workers"]}

    def victim() -> tuple[int, int] | None:
        """(shard, worker) of a shard with a running cell, once a few cells completed."""
        tests = store.list_tests(limit=5)
        mine = [t for t in tests if t.spec.name == "slow-shards" and t.status == "running"]
        if not mine or store.count_invocations(mine[0].test_id).get("completed", 0) < 3:
            return None
        from sqlalchemy import text

        with store.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "select invocation_id, lease_owner from invocations "
                    "where test_id = :t and status = 'running'"
                ),
                {"t": mine[0].test_id},
            ).all()
        for row in rows:
            pid = int(row.lease_owner.split(":")[1])
            worker = next((p for p in _ancestors(pid) if p in workers), None)
            if worker is not None:
                return shard_of(row.invocation_id, 2), worker, pid
        return None

    shard, worker, flow_process = wait_for(victim, 180, "a shard running cells on a worker")
    # The machine dies: the worker and the flow run it started (a session of its own) go.
    os.killpg(worker, signal.SIGKILL)
    os.killpg(os.getpgid(flow_process), signal.SIGKILL)
    workers[worker].wait()
    thread.join(timeout=400)
    get_settings.cache_clear()
    assert not thread.is_alive(), "the parent did not end"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    test_id = result["test_id"]
    counts = store.count_invocations(test_id)
    assert counts == {"completed": slow_test["cells"]}, counts
    runs = {
        i.invocation_id: store.get_invocation(i.invocation_id).runs
        for i in store.list_invocations(test_id)
    }
    # One completed run per cell; only the cells in flight when the worker died have a second.
    assert all(sum(r.status == "completed" for r in rs) == 1 for rs in runs.values())
    # At most `concurrency` (2) cells of each shard were in flight on the dead worker.
    reclaimed = [i for i, rs in runs.items() if len(rs) > 1]
    assert 1 <= len(reclaimed) <= 4, reclaimed
    assert all(len(rs) == 2 for i, rs in runs.items() if i in reclaimed)
    stats = httpx.get(f"{sim.base_url}/stats").json()
    assert stats["models"]["sim-slow"]["requests"] <= slow_test["cells"] + len(reclaimed)
    shards = _shard_runs(result["flow_run_id"])
    states = {r.name: r.state.type.value for r in shards}
    assert len(states) == 2 and states[f"shard-{shard}-of-2"] == "CRASHED", states
    invocations = pd.read_parquet(pool["results"] / test_id / "invocations.parquet")
    assert len(invocations) == slow_test["cells"]
    store.engine.dispose()


def test_served_deployment_runs_the_quickstart(
    prefect_server: str, tmp_path: Path, pool: dict[str, Any]
) -> None:
    """serve.py, started from outside the project by its path, runs the quickstart as-is."""
    env = dict(pool["env"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = start(
        [sys.executable, str(ROOT / "deployments" / "serve.py")], env, elsewhere, tmp_path / "s.log"
    )
    try:
        from prefect.client.orchestration import get_client

        def deployed() -> bool:
            with get_client(sync_client=True) as client:
                try:
                    client.read_deployment_by_name("run-test/local")
                    return True
                except Exception:  # noqa: BLE001 - not registered yet
                    return False

        wait_for(deployed, 90, "the served deployment")
        done = cli(
            [
                "deployment",
                "run",
                "run-test/local",
                "--param",
                "path=data/tests/quickstart.yaml",
                "--watch",
            ],
            env,
            600,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0 and "Completed" in output, output
        test_id = _finished_test(_store(pool["db"]), _flow_run_id(output))
        _check_results(pool, test_id, QUICKSTART_CELLS)
    finally:
        stop(server)
        print((tmp_path / "s.log").read_text()[-4000:])
