"""Grading errors are errors (issue 11, point 1): a judge that cannot be reached, answers
without a score, or is refused by the budget fails the invocation with `judge_error` /
`judge_budget_exhausted`, keeping its output, generations and trace; `--resume` and
`glow regrade` then grade the recorded output with no new call to the model under test.

Real parts: the run-test flow on the session's Prefect test server, litellm over HTTP to the
bundled simulator (the model under test on the session simulator, the judge on a simulator of
its own started on a chosen port, so it can be down and then come back), a SQLite store, and
`glow regrade` as a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("prefect_server", "simulator")

MODEL = "sim-strong"
PRICES = {"input_cost_per_token": 1.0e-7, "output_cost_per_token": 4.0e-7}


def free_port() -> int:
    """A port nothing listens on (until a judge simulator is started there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scenarios(free_text: int = 2, exact: int = 1) -> list[dict[str, Any]]:
    lines = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    pick = [r for r in rows if r["metadata"]["category"] == "free_text"][:free_text]
    return pick + [r for r in rows if r["metadata"]["category"] == "exact"][:exact]


def write_test(
    tmp: Path, judge_base: str, judge_model: str = "openai/sim-judge", **overrides: Any
) -> Path:
    """The quickstart's model, rubric and judge, on a few scenarios, the judge at `judge_base`."""
    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    scenarios = tmp / "scenarios.jsonl"
    scenarios.write_text("\n".join(json.dumps(s) for s in _scenarios()) + "\n")
    spec.update(
        scenarios=str(scenarios),
        models=[m for m in spec["models"] if m["name"] == MODEL],
        judge={
            "name": "sim-judge",
            "model": judge_model,
            "api_base": judge_base,
            "api_key_env": "GLOW_SIM_API_KEY",
            "prices": PRICES,
        },
        max_retries=1,
        concurrency=4,
    )
    spec.update(overrides)
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def leaderboard_artifacts() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard"]))
        )


def requests_of(sim: Any, model: str) -> int:
    return int(sim.stats()["models"].get(model, {}).get("requests", 0))


def judged(store: Any, test_id: str) -> list[Any]:
    return [i for i in store.list_invocations(test_id) if i.category == "free_text"]


def assert_judge_error_kept_everything(store: Any, test_id: str, error_type: str) -> list[Any]:
    """The judged cells failed with `error_type`, output, model generations and trace kept."""
    cells = judged(store, test_id)
    assert len(cells) == 2
    from glow import results

    generations = results.generations_table_from_columns(
        store.generation_columns(test_id)
    ).to_pandas()
    for inv in cells:
        assert inv.status.value == "failed", inv
        assert inv.error_type == error_type and "sim-judge" in (inv.error_message or "")
        assert inv.output and inv.score is None and inv.scores == {}
        assert inv.input_tokens > 0 and inv.model_cost_usd and inv.model_cost_usd > 0
        run = store.get_invocation(inv.invocation_id).runs[-1]
        kinds = [e.kind for e in run.trace]
        assert "model_call" in kinds and "grading" in kinds
        assert run.trace[-1].kind == "error" and run.trace[-1].error_type == error_type
        mine = generations[generations["invocation_id"] == inv.invocation_id]
        assert (mine["role"] == "model").sum() >= 1
    exact = [i for i in store.list_invocations(test_id) if i.category == "exact"]
    assert exact and all(i.status.value == "completed" for i in exact)
    return cells


def test_judge_outage_fails_cells_and_resume_grades_them_without_the_model(
    glow_env: Path, simulator: Any
) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.simulator import SimulatorProcess
    from glow.store import Store

    port = free_port()
    path = write_test(glow_env, f"http://127.0.0.1:{port}/v1")
    first = run_test(path=str(path))
    store = Store.from_settings()
    test_id = first["test_id"]
    cells = assert_judge_error_kept_everything(store, test_id, "judge_error")
    assert all("failed after 2 attempt(s)" in (i.error_message or "") for i in cells)
    aggregated = pd.read_parquet(first["paths"]["aggregated"])
    overall = aggregated[aggregated["category"] == "*"].iloc[0]
    assert overall["n_failed"] == 2 and overall["n_completed"] == 1

    with SimulatorProcess(port=port) as judge:  # the judge is back, at the same address
        model_before = requests_of(simulator, MODEL)
        again = run_test(path=str(path), test_id=test_id, resume=True)
        assert requests_of(simulator, MODEL) == model_before  # the model was not called again
        assert requests_of(judge, "sim-judge") == 2  # one judge call per judged cell

    assert again["counts"] == {"completed": 3}
    for old in cells:
        inv = store.get_invocation(old.invocation_id)
        assert inv.status.value == "completed" and inv.error_type is None
        assert inv.score is not None and "judge" in inv.scores
        assert inv.output == old.output and len(inv.runs) == 2
        # The model's usage and cost are the graded output's; the judge's add up.
        assert (inv.input_tokens, inv.model_cost_usd) == (old.input_tokens, old.model_cost_usd)
        assert inv.judge_cost_usd and inv.judge_cost_usd > 0
        note = inv.runs[-1].trace[0]
        assert note.kind == "note" and note.content["graded_run"] == 1
        assert any(e.kind == "model_call" for e in inv.runs[-1].trace)  # copied, not re-made
        assert inv.runs[0].error_type == "judge_error"  # the failed attempt stays on record


def test_glow_regrade_grades_judge_errors_and_an_outage_never_scores_zero(
    glow_env: Path, simulator: Any
) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.simulator import SimulatorProcess
    from glow.store import Store

    port = free_port()
    path = write_test(glow_env, f"http://127.0.0.1:{port}/v1")
    test_id = run_test(path=str(path))["test_id"]
    store = Store.from_settings()
    cells = assert_judge_error_kept_everything(store, test_id, "judge_error")
    env = {**os.environ, "GLOW_DATA_DIR": str(glow_env)}

    def regrade() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "glow.cli", "regrade", test_id, "--rubric", "quickstart"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with SimulatorProcess(port=port) as judge:
        model_before = requests_of(simulator, MODEL)
        done = regrade()
        assert done.returncode == 0, done.stdout + done.stderr
        assert requests_of(simulator, MODEL) == model_before
        assert requests_of(judge, "sim-judge") == 2
    assert "regraded 3 invocations" in done.stdout
    for old in cells:
        inv = store.get_invocation(old.invocation_id)
        assert inv.status.value == "completed" and inv.score is not None
        assert inv.output == old.output and len(inv.runs) == 1

    # The judge is down again: regrading must not turn the judged cells into zeros.
    done = regrade()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "judge_error: 2" in done.stdout and "glow regrade" in done.stdout
    for old in cells:
        inv = store.get_invocation(old.invocation_id)
        assert inv.status.value == "failed" and inv.error_type == "judge_error"
        assert inv.score is None and inv.output == old.output


@pytest.mark.parametrize(
    ("judge_model", "faults", "message"),
    [
        ("openai/sim-judge", {"sim-judge": {"malformed": 1.0}}, "failed after 2 attempt(s)"),
        ("openai/sim-echo", None, "no score after 2 attempt(s)"),
    ],
    ids=["malformed-body", "reply-without-score"],
)
def test_unparseable_judge_answers_end_judge_error(
    glow_env: Path, simulator: Any, judge_model: str, faults: Any, message: str
) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.simulator import SimulatorProcess
    from glow.store import Store

    with SimulatorProcess(faults=faults) as judge:
        path = write_test(glow_env, judge.url, judge_model)
        test_id = run_test(path=str(path))["test_id"]
        name = judge_model.split("/")[-1]
        assert requests_of(judge, name) == 4  # 2 cells x (1 + max_retries)
    store = Store.from_settings()
    cells = assert_judge_error_kept_everything(store, test_id, "judge_error")
    assert all(message in (i.error_message or "") for i in cells)
    if faults is None:
        # Replies without a score were paid for: their generations and cost are kept.
        for inv in cells:
            assert inv.judge_cost_usd and inv.judge_cost_usd > 0
            assert len(store.judge_cost(inv.invocation_id)) == 2


def test_judge_refused_by_the_budget_then_graded_on_resume(glow_env: Path, simulator: Any) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.store import Store

    sim_url = os.environ["GLOW_SIMULATOR_URL"]
    # One judged cell at a time; the budget is spent by the model's first call.
    path = write_test(glow_env, sim_url, budget_usd=1e-9, concurrency=1)
    spec = yaml.safe_load(path.read_text())
    spec["scenarios"] = str(glow_env / "one.jsonl")
    (glow_env / "one.jsonl").write_text(json.dumps(_scenarios(1, 0)[0]) + "\n")
    path.write_text(yaml.safe_dump(spec))

    first = run_test(path=str(path))
    store = Store.from_settings()
    test_id = first["test_id"]
    (inv,) = store.list_invocations(test_id)
    assert inv.status.value == "failed" and inv.error_type == "judge_budget_exhausted"
    assert inv.output and "budget" in (inv.error_message or "")

    spec["budget_usd"] = 1.0
    path.write_text(yaml.safe_dump(spec))
    judge_before, model_before = requests_of(simulator, "sim-judge"), requests_of(simulator, MODEL)
    again = run_test(path=str(path), test_id=test_id, resume=True)
    assert requests_of(simulator, MODEL) == model_before
    assert requests_of(simulator, "sim-judge") == judge_before + 1
    assert again["counts"] == {"completed": 1}
    graded = store.get_invocation(inv.invocation_id)
    assert graded.score is not None and graded.output == inv.output


def test_totals_and_the_budget_on_resume_count_every_generation_paid_for(
    glow_env: Path, simulator: Any
) -> None:
    from flows.run_test import run_test_sync as run_test
    from glow.context import TestContext
    from glow.models import Generation
    from glow.results.build import build_results
    from glow.spec import load_test
    from glow.store import Store

    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    strong = next(m for m in spec["models"] if m["name"] == MODEL)
    # Not a simulator model: its calls fail at once and cost nothing; a resume runs them again.
    missing = dict(strong, name="sim-missing", model="openai/sim-missing")
    path = write_test(
        glow_env,
        os.environ["GLOW_SIMULATOR_URL"],
        models=[strong, missing],
        rubric="exact_answer",
        budget_usd=1.0,
        max_retries=0,
    )
    first = run_test(path=str(path))
    store = Store.from_settings()
    test_id = first["test_id"]
    done = store.list_invocations(test_id, status="completed")
    assert done and len(store.list_invocations(test_id, status="failed")) == 3
    spent_before = first["summary"]["total_cost_usd"]
    # The failed model's mean over completed cells is empty, with failures as 0 it is 0: the
    # Prefect leaderboard artifact's data marks the row.
    # The artifact's rows carry no test id; its description names the test.
    boards = [
        json.loads(a.data) for a in leaderboard_artifacts() if test_id in (a.description or "")
    ]
    (missing_row,) = [r for board in boards for r in board if r["model"] == "sim-missing"]
    assert missing_row["mean_score"] is None and missing_row["mean_score_all"] == 0.0
    assert missing_row["marker"] == "\u2020"

    # A late run that was discarded (terminated while its call was in flight) still paid for
    # its generation, which the store keeps: the totals and the budget count it.
    store.add_generations(
        [
            Generation(
                test_id=test_id,
                invocation_id=done[0].invocation_id,
                run_id="a-discarded-late-run",
                model=MODEL,
                litellm_model=strong["model"],
                provider="openai",
                input_tokens=1000,
                output_tokens=1000,
                cost_usd=2.0,
            )
        ]
    )
    built = build_results(store, test_id)
    assert built.summary["total_cost_usd"] == pytest.approx(spent_before + 2.0)
    board = {r["model"]: r for r in built.leaderboard}
    assert board[MODEL]["cost_usd"] == pytest.approx(spent_before + 2.0)
    budget = TestContext(test_id, load_test(path), store).budget
    assert budget is not None and budget.spent_usd == pytest.approx(spent_before + 2.0)

    # Resumed, the budget is already spent: the failed cells are not started again.
    unknown_before = simulator.stats()["unknown_model_requests"]
    again = run_test(path=str(path), test_id=test_id, resume=True)
    assert simulator.stats()["unknown_model_requests"] == unknown_before
    assert store.get_test(test_id).status == "budget_exhausted"
    assert again["counts"] == first["counts"]
