"""The spine end to end: test YAML -> run-test flow -> litellm over HTTP -> trace artifacts ->
grading -> store rows -> parquet. Real Prefect server, real simulator, real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from conftest import FAKE_KEY, ROOT

pytestmark = pytest.mark.usefixtures("prefect_server", "simulator")

CATEGORIES = ("exact", "multiple_choice", "free_text", "vision", "tool_use")


def _scenarios(per_category: int = 2) -> list[dict[str, Any]]:
    lines = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    picked: list[dict[str, Any]] = []
    for category in CATEGORIES:
        picked += [r for r in rows if r["metadata"]["category"] == category][:per_category]
    return picked


def write_test(tmp: Path, **overrides: Any) -> Path:
    """A small version of the quickstart test (same models and rubric, fewer scenarios)."""
    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    scenarios = tmp / "scenarios.jsonl"
    scenarios.write_text("\n".join(json.dumps(s) for s in _scenarios()) + "\n")
    spec["scenarios"] = str(scenarios)
    spec.update(overrides)
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sim_stats(simulator: Any) -> dict[str, Any]:
    return httpx.get(f"{simulator.base_url}/stats").json()


def total_requests(stats: dict[str, Any]) -> int:
    return sum(m["requests"] for m in stats["models"].values())


def read_artifacts(keys: list[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )


@pytest.fixture(autouse=True)
def _in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # scenario image paths are relative to the project root


def test_run_test_end_to_end(glow_env: Path, simulator: Any) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.models import Status
    from glow.store import Store

    result = run_test(path=str(write_test(glow_env)))
    store = Store.from_settings()
    test_id = result["test_id"]

    # 10 scenarios x 2 models, minus sim-fast's 2 vision cells (text-only model): skipped.
    assert result["skipped"] == 2
    invocations = store.list_invocations(test_id)
    assert len(invocations) == 18
    assert {i.status for i in invocations} == {Status.completed}
    for inv in invocations:
        assert inv.score is not None and inv.passed is not None and inv.scores
        assert inv.rubric and inv.rubric.startswith("quickstart@")
        assert inv.cost_usd is not None and inv.cost_usd > 0

    # Tool use went through the agent loop: a tool call, its result, then the answer.
    tool_inv = next(i for i in invocations if i.category == "tool_use" and i.model == "sim-strong")
    trace = store.get_invocation(tool_inv.invocation_id).runs[-1].trace
    kinds = [e.kind for e in trace]
    assert "tool_call" in kinds and "tool_result" in kinds
    assert kinds.count("model_call") == 2

    # The image reached the model (the simulator says so when it gets none).
    vision = [i for i in invocations if i.category == "vision"]
    assert vision and all(i.model == "sim-strong" for i in vision)
    assert all("cannot see" not in (i.output or "") for i in vision)

    # Free text was judged: judge generations carry their own cost.
    judged = [i for i in invocations if i.category == "free_text"]
    assert all(i.judge_cost_usd and i.judge_cost_usd > 0 for i in judged)

    # Parquet: row counts equal the store's; per-standard score columns present.
    paths = {k: Path(v) for k, v in result["paths"].items()}
    inv_df = pd.read_parquet(paths["invocations"])
    gen_df = pd.read_parquet(paths["generations"])
    agg_df = pd.read_parquet(paths["aggregated"])
    assert len(inv_df) == len(invocations)
    assert len(gen_df) == store.count_generations(test_id)
    assert set(gen_df["role"]) == {"model", "judge"}
    assert any(c.startswith("score__") for c in inv_df.columns)
    overall = agg_df[agg_df["category"] == "*"].set_index("model")
    assert set(overall.index) == {"sim-strong", "sim-fast"}
    assert overall.loc["sim-fast", "n_skipped"] == 2
    assert overall["cost_usd"].sum() == pytest.approx(inv_df["cost_usd"].sum())

    # Artifacts, read back from the Prefect server.
    keys = [f"trace-{i.invocation_id}" for i in invocations]
    traces = read_artifacts(keys)
    assert {a.key for a in traces} == set(keys)
    assert all(a.type == "markdown" and "Trace of invocation" in a.data for a in traces)
    board = read_artifacts(["leaderboard"])
    assert board and board[-1].type == "table"
    assert read_artifacts(["progress"])

    # The fake key reached the simulator but is stored nowhere.
    assert FAKE_KEY not in (glow_env / "glow.db").read_bytes().decode("latin-1")
    assert all(FAKE_KEY not in a.data for a in traces)
    for path in paths.values():
        assert FAKE_KEY.encode() not in path.read_bytes()


def test_resume_calls_no_model_again(glow_env: Path, simulator: Any) -> None:
    from flows.run_test import run_test_sync as run_test

    path = write_test(glow_env)
    first = run_test(path=str(path))
    before = total_requests(sim_stats(simulator))
    agg_before = pd.read_parquet(first["paths"]["aggregated"])

    again = run_test(path=str(path), test_id=first["test_id"], resume=True)
    assert total_requests(sim_stats(simulator)) == before
    agg_after = pd.read_parquet(again["paths"]["aggregated"])
    pd.testing.assert_frame_equal(agg_before, agg_after)


def test_failed_cells_fail_truthfully_and_resume_retries_them(
    glow_env: Path, simulator: Any
) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.models import Status
    from glow.store import Store

    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    broken = dict(spec["models"][1], name="sim-missing", model="openai/sim-missing")
    path = write_test(glow_env, models=[spec["models"][0], broken], max_retries=0)
    result = run_test(path=str(path))
    store = Store.from_settings()
    failed = store.list_invocations(result["test_id"], status=Status.failed)
    assert failed and all(i.model == "sim-missing" for i in failed)
    assert all(i.error_type == "NotFoundError" for i in failed)
    assert result["counts"]["completed"] == 10

    again = run_test(path=str(path), test_id=result["test_id"], resume=True)
    retried = store.get_invocation(failed[0].invocation_id)
    assert retried.attempts == 2 and len(retried.runs) == 2
    assert again["counts"]["completed"] == 10


def test_unknown_price_is_null_not_zero(glow_env: Path) -> None:
    from flows.run_test import run_test_sync as run_test

    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    unpriced = {k: v for k, v in spec["models"][0].items() if k != "prices"}
    path = write_test(glow_env, models=[unpriced])
    result = run_test(path=str(path))
    inv_df = pd.read_parquet(result["paths"]["invocations"])
    assert inv_df["model_cost_usd"].isna().all()
    assert result["summary"]["total_cost_usd"] is None
    assert "sim-strong" in result["summary"]["cost_unknown_models"]


def test_regrade_keeps_earlier_scores(glow_env: Path, simulator: Any) -> None:
    from flows.regrade import regrade_test_sync as regrade_test
    from flows.run_test import run_test_sync as run_test
    from glow.store import Store

    result = run_test(path=str(write_test(glow_env)))
    store = Store.from_settings()
    before = total_requests(sim_stats(simulator))
    inv = store.list_invocations(result["test_id"], status="completed")[0]
    old = store.scores_for(inv.invocation_id)

    count = regrade_test(store, result["test_id"], "exact_answer")
    assert count == len(store.list_invocations(result["test_id"], status="completed"))
    assert total_requests(sim_stats(simulator)) == before  # exact_answer has no judge
    rows = store.scores_for(inv.invocation_id)
    assert rows[: len(old)] == old
    assert {r.rubric for r in rows[len(old) :]} == {"exact_answer"}
    assert store.get_invocation(inv.invocation_id).rubric.startswith("exact_answer@")


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_pandas_example_runs(
    glow_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from flows.run_test import run_test_sync as run_test

    run_test(path=str(write_test(glow_env)))
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "results").symlink_to(glow_env / "results")
    monkeypatch.chdir(work)
    capsys.readouterr()
    exec(compile(_readme_python(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "sim-strong" in out and "mean_score" in out and "judge" in out


def test_quickstart_command_end_to_end(glow_env: Path, prefect_server: str, simulator: Any) -> None:
    """`glow run data/tests/quickstart.yaml` as a user runs it, then `--resume` calls nothing."""
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "COLUMNS": "200"}
    command = [sys.executable, "-m", "glow.cli", "run", "data/tests/quickstart.yaml"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert "Traceback" not in output and "ERROR" not in output
    assert "sim-strong" in output and "sim-fast" in output and "Total cost" in output
    test_id = re.search(r"test_id:\s+(\S+)", output).group(1)
    results = glow_env / "results" / test_id
    assert {p.name for p in results.glob("*.parquet")} == {
        "invocations.parquet",
        "generations.parquet",
        "aggregated.parquet",
        "pairwise.parquet",
    }
    agg = pd.read_parquet(results / "aggregated.parquet")
    overall = agg[agg["category"] == "*"].set_index("model")["mean_score"]
    assert overall["sim-strong"] > overall["sim-fast"]

    calls = total_requests(sim_stats(simulator))
    again = subprocess.run(
        [*command, "--resume", test_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert total_requests(sim_stats(simulator)) == calls
    pd.testing.assert_frame_equal(agg, pd.read_parquet(results / "aggregated.parquet"))


def test_budget_stops_new_calls_and_leaves_cells_queued(glow_env: Path, simulator: Any) -> None:
    """A budget of a few cells' cost: the test ends budget_exhausted, the rest stay queued."""
    from flows.run_test import run_test_sync as run_test
    from glow.store import Store

    budget = 4e-5  # a cell costs ~1.5e-5 (model + judge) at the quickstart's prices
    path = write_test(glow_env, budget_usd=budget, concurrency=2)
    before = total_requests(sim_stats(simulator))
    result = run_test(path=str(path))
    store = Store.from_settings()
    test_id = result["test_id"]
    assert store.get_test(test_id).status == "budget_exhausted"
    invocations = store.list_invocations(test_id)
    queued = [i for i in invocations if i.status == "queued"]
    spent = [i.cost_usd or 0.0 for i in invocations if i.status != "queued"]
    assert queued and len(queued) < len(invocations)
    assert all(i.attempts == 0 for i in queued)  # never started, never called
    # The overshoot is bounded by the cells in flight when the budget ran out.
    assert budget <= sum(spent) <= budget + 2 * max(spent)
    assert total_requests(sim_stats(simulator)) - before < 2 * len(invocations)


def test_budget_refuses_a_model_without_price(glow_env: Path, simulator: Any) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.errors import SpecError

    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    unpriced = {k: v for k, v in spec["models"][0].items() if k != "prices"}
    path = write_test(glow_env, models=[unpriced], budget_usd=1.0)
    before = total_requests(sim_stats(simulator))
    with pytest.raises(SpecError, match=r"models\[0\].*no known price.*budget_usd"):
        run_test(path=str(path))
    assert total_requests(sim_stats(simulator)) == before


def test_invocation_deadline_ends_hung_calls(glow_env: Path, simulator: Any) -> None:
    """Every call hangs; with 10 retries allowed, deadline_s=3 still fails the cell in time."""
    import time

    from flows.run_test import run_test_sync as run_test

    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    path = write_test(
        glow_env,
        models=[spec["models"][1]],
        timeout_s=1,
        max_retries=10,
        deadline_s=3,
        concurrency=8,
    )
    simulator.set_faults({"sim-fast": {"fail_first": 1000, "fail_kind": "hang", "hang_s": 30}})
    try:
        started = time.monotonic()
        result = run_test(path=str(path))
        elapsed = time.monotonic() - started
    finally:
        simulator.set_faults({"sim-fast": None})
    inv_df = pd.read_parquet(result["paths"]["invocations"])
    assert set(inv_df["status"]) == {"failed"}
    assert set(inv_df["error_type"]) <= {"DeadlineExceeded", "Timeout"}
    assert elapsed < 30, elapsed  # 8 cells at once, each ended within ~3 s of its start
