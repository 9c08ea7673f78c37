"""glow.stats and the comparison tables against values computed by hand (shown in comments).

No fixtures: pure functions on small arrays, and pyarrow tables shaped like invocations.parquet.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from glow import comparison, stats
from glow.results import invocations_table


def test_student_t_against_closed_forms_and_tables() -> None:
    # df=1 is the Cauchy distribution: P(|T| > 1) = 1 - (2/pi) atan(1) = 0.5.
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    # df=2: P(|T| > t) = 1 - t / sqrt(2 + t^2); t = sqrt(3): 1 - sqrt(3/5) = 0.2254033307585166.
    assert stats.t_two_sided_p(math.sqrt(3), 2) == pytest.approx(0.2254033307585166, abs=1e-12)
    # df=3: P(|T| > t) = 1 - (2/pi) (atan(u) + u / (1 + u^2)), u = t / sqrt(3); t = sqrt(3):
    # u = 1, 1 - (2/pi)(pi/4 + 1/2) = 1/2 - 1/pi = 0.18169011381620932.
    assert stats.t_two_sided_p(math.sqrt(3), 3) == pytest.approx(0.5 - 1 / math.pi, abs=1e-12)
    # Printed t tables, 0.975 quantiles: df 1 -> 12.706, 2 -> 4.303, 5 -> 2.571, 10 -> 2.228.
    for df, expected in ((1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228)):
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    # Large df tends to the normal 1.96.
    assert stats.t_quantile(0.975, 100_000) == pytest.approx(1.96, abs=1e-3)
    assert stats.t_quantile(0.025, 5) == pytest.approx(-2.571, abs=5e-4)


def test_stderr_and_ci95() -> None:
    # [1, 2, 3, 4]: mean 2.5, sample variance (2.25+0.25+0.25+2.25)/3 = 5/3, stderr
    # sqrt(5/3 / 4) = 0.6454972243679028.
    assert stats.stderr([1, 2, 3, 4]) == pytest.approx(0.6454972243679028)
    assert stats.stderr([1.0, float("nan")]) is None  # one value left
    assert stats.mean_ci95(0.5, 0.1) == pytest.approx((0.304, 0.696))
    assert stats.mean_ci95(0.9, 0.1) == pytest.approx((0.704, 1.0))  # clamped to [0, 1]
    assert stats.mean_ci95(0.5, None) == (None, None)


def test_clustered_stderr_by_hand() -> None:
    values = [1, 1, 0, 0, 1, 0]
    # Unclustered: mean 0.5, sample variance 6 * 0.25 / 5 = 0.3, stderr sqrt(0.3/6) = 0.2236068.
    assert stats.clustered_stderr(values) == pytest.approx(math.sqrt(0.05))
    assert stats.clustered_stderr(values) == pytest.approx(stats.stderr(values))
    # Clusters A A | B B | C C: residual sums +1, -1, 0; G = 3, n = 6:
    # sqrt(3/2 * (1 + 1 + 0)) / 6 = sqrt(3) / 6 = 0.28867513 (larger than the naive 0.2236).
    clustered = stats.clustered_stderr(values, ["A", "A", "B", "B", "C", "C"])
    assert clustered == pytest.approx(math.sqrt(3) / 6)
    # Clusters A A B B A B: A holds 1, 1, 1 and B 0, 0, 0, residual sums +1.5, -1.5:
    # sqrt(2/1 * 4.5) / 6 = 0.5 (every score decided by its cluster: a third of the naive n).
    assert stats.clustered_stderr(values, ["A", "A", "B", "B", "A", "B"]) == pytest.approx(0.5)
    assert stats.clustered_stderr(values, ["A"] * 6) is None  # one cluster: no spread known
    with pytest.raises(ValueError, match="cluster labels"):
        stats.clustered_stderr(values, ["A", "B"])


def test_paired_difference_clustered_by_hand() -> None:
    a = [1, 1, 0, 0, 1, 0, float("nan")]
    b = [0, 0, 0, 0, 0, 0, 1]
    result = stats.paired_difference(a, b, ["s1", "s1", "s2", "s2", "s3", "s3", "s4"])
    # The NaN pair is dropped: d = 1 1 0 0 1 0, mean 0.5; stderr sqrt(3)/6 (as above), G = 3,
    # t = 0.5 / 0.288675 = sqrt(3), df 2: p = 1 - sqrt(3/5) = 0.2254033; CI 0.5 -/+ 4.302653 *
    # 0.288675 = [-0.742069, 1.742069].
    assert result.n_pairs == 6 and result.n_clusters == 3
    assert result.mean_a == pytest.approx(0.5) and result.mean_b == pytest.approx(0.0)
    assert result.mean_diff == pytest.approx(0.5)
    assert result.stderr == pytest.approx(math.sqrt(3) / 6)
    assert result.p_value == pytest.approx(1 - math.sqrt(3 / 5), abs=1e-9)
    assert result.ci95_low == pytest.approx(-0.742069, abs=1e-5)
    assert result.ci95_high == pytest.approx(1.742069, abs=1e-5)
    assert (result.wins, result.ties, result.losses) == (3, 3, 0)
    assert result.method == "paired-t-clustered"


def test_paired_difference_unclustered_is_the_paired_t_test() -> None:
    # a = .9 .6 .8 .4, b = .5 .6 .3 .6: d = .4 0 .5 -.2, mean 0.175, sample sd of d:
    # residuals .225 -.175 .325 -.375, squares sum .050625+.030625+.105625+.140625 = .3275,
    # var .3275/3 = .109167, stderr sqrt(.109167/4) = .165202; t = 1.059306, df 3:
    # u = t/sqrt(3) = .611590, atan(u) = .548900, u/(1+u^2) = .445104,
    # p = 1 - (2/pi)(.548900 + .445104) = 0.367197.
    result = stats.paired_difference([0.9, 0.6, 0.8, 0.4], [0.5, 0.6, 0.3, 0.6])
    assert result.mean_diff == pytest.approx(0.175)
    assert result.stderr == pytest.approx(math.sqrt(0.3275 / 3 / 4))
    u = 0.175 / math.sqrt(0.3275 / 12) / math.sqrt(3)
    assert result.p_value == pytest.approx(1 - 2 / math.pi * (math.atan(u) + u / (1 + u * u)))
    assert result.p_value == pytest.approx(0.367197, abs=1e-5)
    half = 3.182446 * math.sqrt(0.3275 / 12)  # t(0.975, 3) = 3.182446
    assert result.ci95_low == pytest.approx(0.175 - half, abs=1e-5)
    assert result.ci95_high == pytest.approx(0.175 + half, abs=1e-5)
    assert (result.wins, result.ties, result.losses) == (2, 1, 1)


def test_paired_difference_degenerate_cases() -> None:
    empty = stats.paired_difference([float("nan")], [1.0])
    assert empty.n_pairs == 0 and empty.mean_diff is None and empty.p_value is None
    single = stats.paired_difference([1.0], [0.0])
    assert single.mean_diff == 1.0 and single.stderr is None and single.p_value is None
    same = stats.paired_difference([0.5, 1.0], [0.5, 1.0])
    assert same.stderr == 0.0 and same.p_value == 1.0 and same.ci95_low == same.ci95_high == 0.0
    shifted = stats.paired_difference([1.0, 1.0], [0.0, 0.0])
    assert shifted.p_value == 0.0 and shifted.ci95_low == 1.0


def _invocation(scenario: str, model: str, epoch: int, score: float | None, **extra: Any) -> dict:
    status = extra.pop("status", "completed")
    return {
        "invocation_id": f"{scenario}-{model}-{epoch}-{extra.get('test_id', 't')}",
        "test_id": "t",
        "scenario_id": scenario,
        "category": extra.pop("category", "c1"),
        "model": model,
        "agent": "direct",
        "provider": "openai",
        "epoch": epoch,
        "modalities": ["text"],
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "status": status,
        "score": score,
        "passed": None if score is None else score >= 0.5,
        "cost_usd": extra.pop("cost_usd", 0.01),
        **extra,
    }


def test_pairwise_table_pairs_completed_cells_and_clusters_epochs() -> None:
    rows = []
    # Two scenarios x two epochs; model x beats y on s1 in both epochs, ties on s2 epoch 1,
    # loses on s2 epoch 2; and x's failed cell on s3 must not count.
    for scenario, epoch, x, y in (
        ("s1", 1, 1.0, 0.0),
        ("s1", 2, 1.0, 0.0),
        ("s2", 1, 1.0, 1.0),
        ("s2", 2, 0.0, 1.0),
        ("s3", 1, None, 1.0),
    ):
        x_status = "failed" if x is None else "completed"
        rows.append(_invocation(scenario, "x", epoch, x, status=x_status))
        rows.append(
            _invocation(scenario, "y", epoch, y, category="c2" if scenario == "s2" else "c1")
        )
    table = comparison.pairwise_table(invocations_table(rows, []))
    assert table.schema == comparison.PAIRWISE_SCHEMA
    overall = [r for r in table.to_pylist() if r["category"] == "*"]
    assert len(overall) == 1
    row = overall[0]
    # d = 1 1 0 -1 (s3 dropped: x failed), mean 0.25; clusters by scenario: s1 residual sum
    # .75+.75 = 1.5, s2 -.25-1.25 = -1.5; G = 2, n = 4: sqrt(2 * 4.5) / 4 = 0.75; t = 1/3,
    # df 1: p = 1 - (2/pi) atan(1/3) = 0.795167.
    assert (row["model_a"], row["model_b"]) == ("x", "y")
    assert row["n_pairs"] == 4 and row["n_clusters"] == 2
    assert row["mean_diff"] == pytest.approx(0.25)
    assert row["stderr"] == pytest.approx(0.75)
    assert row["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(1 / 3))
    assert (row["wins"], row["ties"], row["losses"]) == (2, 1, 1)
    by_category = {r["category"]: r for r in table.to_pylist()}
    assert set(by_category) == {"*", "c1", "c2"}

    # cluster_by putting s1 and s2 in one cluster: one cluster, no stderr.
    merged = comparison.pairwise_table(invocations_table(rows, []), {"s1": "v", "s2": "v"})
    assert [r["stderr"] for r in merged.to_pylist() if r["category"] == "*"] == [None]


def test_regression_table_by_hand() -> None:
    base = [
        _invocation("s1", "x", 1, 1.0, cost_usd=0.02),
        _invocation("s2", "x", 1, 1.0, cost_usd=0.02),
        _invocation("s3", "x", 1, 0.0, cost_usd=0.02),
        _invocation("s4", "x", 1, 0.0, cost_usd=0.02),
    ]
    new = [
        _invocation("s1", "x", 1, 1.0, cost_usd=0.01, test_id="n"),
        _invocation("s2", "x", 1, None, status="failed", cost_usd=0.0, test_id="n"),
        _invocation("s3", "x", 1, 1.0, cost_usd=0.01, test_id="n"),
        _invocation("s4", "x", 1, 1.0, cost_usd=0.01, test_id="n"),
        _invocation("s5", "x", 1, 1.0, cost_usd=0.01, test_id="n"),  # not in base: left out
    ]
    table = comparison.regression_table(
        invocations_table(new, []), invocations_table(base, []), test_id="n", base_test_id="b"
    )
    assert table.schema == comparison.REGRESSION_SCHEMA
    (row,) = [r for r in table.to_pylist() if r["category"] == "*"]
    # Pairs s1 s3 s4 (s2 failed in new): d = 0 1 1, mean 2/3; residuals -2/3 1/3 1/3, sum of
    # squares 2/3, var 1/3, stderr sqrt(1/9) = 1/3; t = 2, df 2: p = 1 - 2/sqrt(6) = 0.183503.
    assert row["n_pairs"] == 3
    assert row["mean_base"] == pytest.approx(1 / 3) and row["mean_new"] == pytest.approx(1.0)
    assert row["delta"] == pytest.approx(2 / 3)
    assert row["stderr"] == pytest.approx(1 / 3)
    assert row["p_value"] == pytest.approx(1 - 2 / math.sqrt(6))
    assert row["newly_failing"] == 1 and row["newly_passing"] == 2  # s2; s3 and s4
    # Shared cells s1-s4: base 4 x 0.02, new 0.01 + 0 + 0.01 + 0.01.
    assert row["cost_base_usd"] == pytest.approx(0.08) and row["cost_new_usd"] == pytest.approx(
        0.03
    )
    assert row["cost_delta_usd"] == pytest.approx(-0.05)
    assert "| x | direct | * | 3 |" in comparison.regression_markdown(table)

    unknown = [dict(r, cost_usd=None) if r["scenario_id"] == "s1" else r for r in new]
    table = comparison.regression_table(
        invocations_table(unknown, []), invocations_table(base, []), test_id="n", base_test_id="b"
    )
    (row,) = [r for r in table.to_pylist() if r["category"] == "*"]
    assert row["cost_new_usd"] is None and row["cost_delta_usd"] is None  # unknown, never 0


def test_cluster_by_is_validated_in_the_spec() -> None:
    from pydantic import ValidationError

    from glow.models import TestSpec

    base = {"name": "t", "scenarios": "s.jsonl", "models": [{"name": "m", "model": "x/y"}]}
    assert TestSpec.model_validate({**base, "rubric": "r"}).cluster_by is None
    assert TestSpec.model_validate({**base, "rubric": "r", "cluster_by": "source"}).cluster_by
    with pytest.raises(ValidationError, match="cluster_by"):
        TestSpec.model_validate({**base, "rubric": "r", "cluster_by": ""})


def test_aggregated_stderr_clusters_epochs_and_cluster_by() -> None:
    from glow.results import aggregate, generations_table

    rows = [
        _invocation(scenario, "x", epoch, score)
        for scenario, score in (("s1", 1.0), ("s2", 0.0), ("s3", 1.0))
        for epoch in (1, 2)
    ]
    invocations = invocations_table(rows, [])

    def overall_stderr(clusters: dict[str, str] | None) -> float | None:
        table = aggregate(invocations, generations_table([]), [], 2, clusters=clusters)
        (row,) = [r for r in table.to_pylist() if r["category"] == "*"]
        return row["stderr"]

    # Scores 1 1 | 0 0 | 1 1 by scenario, mean 2/3. Unclustered it would be
    # sqrt(var([1,1,0,0,1,1]) / 6) = sqrt(0.266667 / 6) = 0.210819. Clustered by scenario:
    # residual sums 2/3, -4/3, 2/3, squares 4/9 + 16/9 + 4/9 = 24/9; G = 3, n = 6:
    # sqrt(3/2 * 24/9) / 6 = 2/6 = 0.333333.
    assert overall_stderr(None) == pytest.approx(1 / 3)
    # cluster_by puts s1 and s2 together (sums -2/3, 2/3): sqrt(2 * 8/9) / 6 = 0.222222.
    assert overall_stderr({"s1": "a", "s2": "a", "s3": "b"}) == pytest.approx(4 / 3 / 6)
    assert overall_stderr({"s1": "a", "s2": "a", "s3": "a"}) is None  # one cluster


def test_cluster_by_naming_no_scenario_key_is_refused(tmp_path: Path) -> None:
    from glow.errors import SpecError
    from glow.spec import load_test

    scenarios = tmp_path / "scenarios.jsonl"
    scenarios.write_text(
        '{"id": "s1", "input": "2+2?", "reference": "4", "metadata": {"source": "a"}}\n'
    )
    spec = {
        "name": "t",
        "scenarios": str(scenarios),
        "models": [{"name": "m", "model": "openai/sim-echo", "api_base": "http://127.0.0.1:9/v1"}],
        "rubric": "exact_answer",
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({**spec, "cluster_by": "source"}))
    assert load_test(path).spec.cluster_by == "source"
    path.write_text(yaml.safe_dump({**spec, "cluster_by": "sourse"}))
    with pytest.raises(SpecError, match=r"test\.yaml: cluster_by: no scenario has .*'sourse'"):
        load_test(path)
