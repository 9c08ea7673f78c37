"""Paired comparisons on real runs: pairwise.parquet, regression.parquet and its artifact after two
runs of the same test name, `glow compare`, glow.analysis and the examples/ scripts.

Real parts only: the session's Prefect test server, the bundled simulator over HTTP (the models),
a real SQLite store and results folder, and real subprocesses for the CLI and the examples.
The two runs differ only in the models' request `seed`, which the simulator uses to decide which
answers are right, so the second run really scores differently on some cells.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT
from test_run_test import read_artifacts, write_test

from glow import stats

pytestmark = pytest.mark.usefixtures("prefect_server", "simulator")

NAME = "stats-nightly"
EPOCHS = 2


def _spec_path(tmp: Path, seed: int) -> Path:
    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    models = [dict(m, params={"seed": seed}) for m in spec["models"]]
    return write_test(tmp, name=NAME, models=models, epochs=EPOCHS, cluster_by="topic")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two completed runs of the test `NAME` in a store of their own; yields their results."""
    from flows.run_test import run_test_sync as run_test
    from glow.settings import get_settings

    tmp = tmp_path_factory.mktemp("comparison")
    patch = pytest.MonkeyPatch()
    patch.setenv("GLOW_DATABASE_URL", f"sqlite:///{tmp / 'glow.db'}")
    patch.setenv("GLOW_RESULTS_DIR", str(tmp / "results"))
    patch.chdir(ROOT)
    get_settings.cache_clear()
    try:
        first_dir, second_dir = tmp / "first", tmp / "second"
        first_dir.mkdir()
        second_dir.mkdir()
        first = run_test(path=str(_spec_path(first_dir, seed=1)))
        second = run_test(path=str(_spec_path(second_dir, seed=2)))
        yield {"first": first, "second": second, "tmp": tmp, "results": tmp / "results"}
    finally:
        patch.undo()
        get_settings.cache_clear()


def _env(runs: dict[str, Any]) -> dict[str, str]:
    return {
        **os.environ,
        "GLOW_DATABASE_URL": f"sqlite:///{runs['tmp'] / 'glow.db'}",
        "GLOW_RESULTS_DIR": str(runs["results"]),
    }


def _invocations(path: str | Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def test_pairwise_parquet_of_a_real_run(runs: dict[str, Any]) -> None:
    paths = runs["second"]["paths"]
    assert Path(paths["pairwise"]).parent == Path(paths["aggregated"]).parent
    table = pq.read_table(paths["pairwise"])
    assert table.schema.metadata[b"glow_table"] == b"pairwise"
    assert table.column_names == [
        "model_a", "agent_a", "model_b", "agent_b", "category", "n_pairs", "n_clusters",
        "mean_a", "mean_b", "mean_diff", "stderr", "ci95_low", "ci95_high", "p_value", "method",
        "wins", "ties", "losses",
    ]  # fmt: skip
    rows = table.to_pylist()
    (overall,) = [r for r in rows if r["category"] == "*"]
    assert (overall["model_a"], overall["model_b"]) == ("sim-fast", "sim-strong")

    # Recomputed here from invocations.parquet: pairs of completed cells by (scenario, epoch).
    inv = _invocations(paths["invocations"])
    done = inv[inv["status"] == "completed"]
    wide = done.pivot_table(index=["scenario_id", "epoch"], columns="model", values="score")
    wide = wide.dropna()
    diff = (wide["sim-fast"] - wide["sim-strong"]).to_numpy()
    # 10 scenarios minus sim-fast's 2 skipped vision ones, 2 epochs each.
    assert overall["n_pairs"] == len(wide) == 8 * EPOCHS
    assert overall["mean_diff"] == pytest.approx(diff.mean())
    assert overall["wins"] == int((diff > 1e-9).sum())
    assert overall["losses"] == int((diff < -1e-9).sum())
    assert overall["wins"] + overall["ties"] + overall["losses"] == overall["n_pairs"]
    # cluster_by: topic puts the two arithmetic `exact` scenarios in one cluster; the 6 other
    # scenarios have no topic and are clusters of their own; a scenario's epochs share one.
    assert overall["n_clusters"] == 7
    scenarios = wide.index.get_level_values("scenario_id")
    clusters = ["arithmetic" if s in ("exact-001", "exact-002") else s for s in scenarios]
    assert overall["stderr"] == pytest.approx(stats.clustered_stderr(diff, clusters))
    assert overall["ci95_low"] < overall["mean_diff"] < overall["ci95_high"]
    assert 0.0 <= overall["p_value"] <= 1.0
    assert overall["method"] == "paired-t-clustered"
    categories = {r["category"] for r in rows}
    assert categories == {"*", "exact", "multiple_choice", "free_text", "tool_use", "vision"}
    (vision,) = [r for r in rows if r["category"] == "vision"]
    assert vision["n_pairs"] == 0 and vision["mean_diff"] is None  # sim-fast never ran them


def test_regression_parquet_and_artifact_after_two_runs(runs: dict[str, Any]) -> None:
    first, second = runs["first"], runs["second"]
    assert "regression" not in first["paths"]  # no earlier run of the name
    path = Path(second["paths"]["regression"])
    assert path.parent == Path(second["paths"]["invocations"]).parent
    table = pq.read_table(path)
    assert table.column_names == [
        "test_id", "base_test_id", "model", "agent", "category", "n_pairs", "mean_base",
        "mean_new", "delta", "stderr", "ci95_low", "ci95_high", "p_value", "newly_failing",
        "newly_passing", "cost_base_usd", "cost_new_usd", "cost_delta_usd",
    ]  # fmt: skip
    rows = table.to_pylist()
    assert {r["test_id"] for r in rows} == {second["test_id"]}
    assert {r["base_test_id"] for r in rows} == {first["test_id"]}

    base = _invocations(first["paths"]["invocations"])
    new = _invocations(second["paths"]["invocations"])
    cells = ["scenario_id", "model", "agent", "epoch"]
    both = new.merge(base, on=cells, suffixes=("_new", "_base"))
    changed = 0
    for model in ("sim-fast", "sim-strong"):
        (row,) = [r for r in rows if r["model"] == model and r["category"] == "*"]
        mine = both[both["model"] == model]
        scored = mine.dropna(subset=["score_new", "score_base"])
        completed = (scored["status_new"] == "completed") & (scored["status_base"] == "completed")
        scored = scored[completed]
        assert row["n_pairs"] == len(scored) > 0
        assert row["delta"] == pytest.approx((scored["score_new"] - scored["score_base"]).mean())
        passing_new = (mine["status_new"] == "completed") & mine["passed_new"].fillna(False)
        passing_base = (mine["status_base"] == "completed") & mine["passed_base"].fillna(False)
        assert row["newly_failing"] == int((passing_base & ~passing_new).sum())
        assert row["newly_passing"] == int((~passing_base & passing_new).sum())
        assert row["cost_base_usd"] == pytest.approx(mine["cost_usd_base"].sum())
        assert row["cost_new_usd"] == pytest.approx(mine["cost_usd_new"].sum())
        assert row["cost_delta_usd"] == pytest.approx(row["cost_new_usd"] - row["cost_base_usd"])
        changed += row["newly_failing"] + row["newly_passing"]
    assert changed > 0, "the seeds should change some answers; the test would check nothing"

    artifacts = [a for a in read_artifacts(["regression"]) if first["test_id"] in str(a.data)]
    assert artifacts, "no `regression` artifact naming the base test"
    markdown = str(artifacts[-1].data)
    assert second["test_id"] in markdown and "sim-strong" in markdown and "newly" in markdown


def _glow(runs: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    glow = Path(sys.executable).parent / "glow"
    return subprocess.run(
        [str(glow), *args], capture_output=True, text=True, env=_env(runs), timeout=120
    )


def test_glow_compare_prints_the_regression_table(runs: dict[str, Any]) -> None:
    first, second = runs["first"]["test_id"], runs["second"]["test_id"]
    table = pq.read_table(runs["second"]["paths"]["regression"]).to_pandas()
    overall = table[table["category"] == "*"].set_index("model")

    done = _glow(runs, "compare", second)
    assert done.returncode == 0, done.stderr
    assert first in done.stdout and second in done.stdout  # the default base: the first run
    for model in ("sim-fast", "sim-strong"):
        line = next(line for line in done.stdout.splitlines() if model in line)
        assert f"{overall.loc[model, 'delta']:+.3f}" in line
        assert f" {overall.loc[model, 'n_pairs']} " in line
    assert "free_text" not in done.stdout

    explicit = _glow(runs, "compare", second, first, "--categories")
    assert explicit.returncode == 0, explicit.stderr
    assert "free_text" in explicit.stdout and "tool_use" in explicit.stdout

    none = _glow(runs, "compare", first)  # the first run has no earlier one
    assert none.returncode == 2
    assert "no earlier completed run" in none.stderr and first in none.stderr
    missing = _glow(runs, "compare", second, "no-such-test")
    assert missing.returncode == 2 and "no-such-test" in missing.stderr


def test_analysis_loads_typed_frames(runs: dict[str, Any]) -> None:
    from glow import analysis

    ids = [runs["first"]["test_id"], runs["second"]["test_id"]]
    r = analysis.load(ids, results_dir=runs["results"])
    assert r.test_ids == ids
    inv = r.invocations
    for column in ("test_id", "model", "agent", "status", "category"):
        assert isinstance(inv[column].dtype, pd.CategoricalDtype), column
    assert set(inv["test_id"].cat.categories) == set(ids)
    sizes = [len(_invocations(runs[k]["paths"]["invocations"])) for k in ("first", "second")]
    assert len(inv) == sum(sizes)
    assert inv["score"].dtype == np.float64
    standards = ["exact_answer", "choice", "judge", "mentions_reference", "calculator_result"]
    assert r.standards == standards
    assert all(inv[f"score__{s}"].dtype == np.float64 for s in r.standards)
    assert str(inv["passed"].dtype) == "boolean"
    assert isinstance(inv["created_at"].dtype, pd.DatetimeTZDtype)
    assert str(inv["created_at"].dt.tz) == "UTC"
    assert isinstance(r.generations["role"].dtype, pd.CategoricalDtype)
    assert isinstance(r.pairwise["model_a"].dtype, pd.CategoricalDtype)
    assert set(r.pairwise["test_id"]) == set(ids)  # added: pairwise.parquet has no test_id
    assert set(r.regression["test_id"]) == {ids[1]}  # only the second run has one
    assert set(r.overall()["category"]) == {"*"}

    # One test by folder; a missing one is named.
    one = analysis.load(Path(runs["second"]["paths"]["invocations"]).parent)
    assert one.test_ids == [ids[1]]
    with pytest.raises(analysis.NotFound, match="no-such-test"):
        analysis.load("no-such-test", results_dir=runs["results"])
    assert analysis.runs(NAME, store_url=f"sqlite:///{runs['tmp'] / 'glow.db'}") == ids


def test_analysis_imports_neither_litellm_nor_prefect(runs: dict[str, Any]) -> None:
    code = (
        "import sys; from glow import analysis; "
        f"r = analysis.load({runs['second']['test_id']!r}); "
        f"analysis.runs({NAME!r}); "
        "print(len(r.invocations), sorted({m.split('.')[0] for m in sys.modules} & "
        "{'litellm', 'prefect'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(runs), timeout=60
    )
    assert done.returncode == 0, done.stderr
    count, heavy = done.stdout.split(" ", 1)
    assert int(count) > 0 and heavy.strip() == "[]"


def _example(runs: dict[str, Any], script: str, *args: str) -> list[list[str]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        env=_env(runs),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]


def test_examples_answer_from_a_real_run(runs: dict[str, Any]) -> None:
    second = runs["second"]
    test_id = second["test_id"]
    aggregated = pq.read_table(second["paths"]["aggregated"]).to_pandas()
    per_category = aggregated[aggregated["category"] != "*"].dropna(subset=["mean_score"])

    best = {row[0]: row for row in _example(runs, "best_model_per_category.py", test_id)}
    assert set(best) == set(per_category["category"])
    for category, group in per_category.groupby("category"):
        assert float(best[category][3]) == pytest.approx(group["mean_score"].max(), abs=5e-4)

    inv = _invocations(second["paths"]["invocations"])
    cost_rows = _example(runs, "cost_per_correct_answer.py", test_id)
    assert {row[0] for row in cost_rows} == {"sim-fast", "sim-strong"}
    for model, _agent, correct, total, per in cost_rows:
        mine = inv[(inv["model"] == model) & (inv["status"] == "completed")]
        assert int(correct) == int(mine["passed"].sum())
        expected_total = inv.loc[inv["model"] == model, "cost_usd"].sum()
        assert float(total.lstrip("$")) == pytest.approx(expected_total, abs=1e-6)
        assert float(per.lstrip("$")) == pytest.approx(expected_total / int(correct), rel=1e-3)

    disagreement = _example(runs, "standard_disagreement.py", test_id)
    pairs = {(row[0], row[1]): row for row in disagreement}
    # judge and mentions_reference both grade free_text: 2 scenarios x 2 models x 2 epochs.
    judged = pairs[("judge", "mentions_reference")]
    assert judged[2] == f"n={2 * 2 * EPOCHS}"
    both = inv[["score__judge", "score__mentions_reference"]].dropna()
    disagree = int(((both.iloc[:, 0] >= 0.5) != (both.iloc[:, 1] >= 0.5)).sum())
    assert judged[3] == f"disagree={disagree}"
    assert ("exact_answer", "choice") not in pairs  # never on the same scenario

    over_runs = _example(runs, "score_over_runs.py", NAME, "sim-strong")
    assert [row[0] for row in over_runs] == [runs["first"]["test_id"], test_id]
    for row, run in zip(over_runs, ("first", "second"), strict=True):
        agg = pq.read_table(runs[run]["paths"]["aggregated"]).to_pandas()
        expected = agg[(agg["category"] == "*") & (agg["model"] == "sim-strong")]["mean_score"]
        assert float(row[4]) == pytest.approx(float(expected.iloc[0]), abs=5e-4)
