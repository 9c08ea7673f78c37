"""AggregatedResults and parquet export, checked against hand-computed numbers."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from glow import results
from glow.models import (
    AggregatedRow,
    Generation,
    Invocation,
    Modality,
    SkippedCell,
    Status,
)
from glow.results import (
    aggregate,
    arrow_schema,
    generations_table,
    invocations_table,
    leaderboard,
    summary,
    write_results,
)

STANDARDS = ["exact", "judge"]
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def inv(
    invocation_id: str,
    scenario_id: str,
    *,
    model: str = "m1",
    agent: str = "direct",
    category: str = "A",
    status: Status = Status.completed,
    score: float | None = None,
    passed: bool | None = None,
    scores: dict[str, float] | None = None,
    latency_s: float | None = None,
    epoch: int = 1,
    input_tokens: int = 0,
    output_tokens: int = 0,
    test_id: str = "t1",
    error_type: str | None = None,
) -> dict[str, Any]:
    """An invocation row as the store yields it: a model dump without runs."""
    return Invocation(
        invocation_id=invocation_id,
        test_id=test_id,
        scenario_id=scenario_id,
        category=category,
        model=model,
        agent=agent,
        provider="openai",
        epoch=epoch,
        status=status,
        score=score,
        passed=passed,
        scores=scores or {},
        latency_s=latency_s,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        error_type=error_type,
        created_at=T0,
    ).model_dump(exclude={"runs"})


def gen(
    invocation_id: str,
    cost: float | None,
    *,
    role: Literal["model", "judge"] = "model",
    model: str = "m1",
) -> dict[str, Any]:
    return Generation(
        test_id="t1",
        invocation_id=invocation_id,
        run_id=f"run-{invocation_id}",
        role=role,
        model=model,
        litellm_model=f"openai/{model}",
        provider="openai",
        standard="judge" if role == "judge" else None,
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        created_at=T0,
    ).model_dump()


def fixture_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """m1: five scenarios over categories A and B; m2: two scenarios, one unpriced call."""
    invocations = [
        inv("i1", "s1", score=1.0, passed=True, scores={"exact": 1.0, "judge": 1.0},
            latency_s=1.0, input_tokens=100, output_tokens=10),
        inv("i2", "s2", score=0.5, passed=True, scores={"exact": 0.0, "judge": 1.0},
            latency_s=2.0, input_tokens=100, output_tokens=10),
        inv("i3", "s3", category="B", score=0.0, passed=False, scores={"exact": 0.0},
            latency_s=3.0, input_tokens=100, output_tokens=10),
        # A failed run's partial grade and latency must not count.
        inv("i4", "s4", category="B", status=Status.failed, score=1.0, passed=True,
            scores={"exact": 1.0}, latency_s=100.0, input_tokens=50),
        inv("i5", "s5", category="B", status=Status.queued),
        inv("j1", "s1", model="m2", score=0.8, passed=True, latency_s=4.0, input_tokens=7),
        inv("j2", "s2", model="m2", status=Status.terminated),
        inv("j3", "s3", model="m2", category="B", status=Status.running),
    ]  # fmt: skip
    generations = [
        gen("i1", 0.01),
        gen("i2", 0.01),
        gen("i3", 0.01),
        gen("i4", 0.01),
        # A judge call is charged to the invocation's model, not to the judge's name.
        gen("i1", 0.002, role="judge", model="judge-model"),
        gen("i2", 0.002, role="judge", model="judge-model"),
        gen("j1", 0.03, model="m2"),
        gen("j1", None, model="m2"),
        gen("not-an-invocation", 5.0),  # orphan: ignored
    ]
    return invocations, generations


def aggregated_fixture(**kwargs: Any) -> pa.Table:
    invocations, generations = fixture_rows()
    skipped = [
        SkippedCell(scenario_id="s6", model="m1", agent="direct", missing=[Modality.image]),
        SkippedCell(scenario_id="s1", model="m2", agent="direct", missing=[Modality.audio]),
    ]
    return aggregate(
        invocations_table(invocations, STANDARDS),
        generations_table(generations),
        STANDARDS,
        1,
        skipped,
        skipped_categories={"s6": "C"},
        **kwargs,
    )


def row(table: pa.Table, model: str, category: str = "*") -> dict[str, Any]:
    matches = [r for r in table.to_pylist() if r["model"] == model and r["category"] == category]
    assert len(matches) == 1, (model, category, matches)
    return matches[0]


# --------------------------------------------------------------------------- arrow_schema


class Colour(StrEnum):
    red = "red"
    blue = "blue"


class Inner(BaseModel):
    x: int


class Everything(BaseModel):
    s: str
    i: int
    f: float
    b: bool
    ts: datetime
    colour: Colour
    lit: Literal["a", "b"]
    maybe_int: int | None = None
    maybe_ts: datetime | None = None
    colours: list[Colour]
    names: list[str]
    meta: dict[str, Any]
    anything: Any = None
    inner: Inner
    inners: list[Inner]
    either: str | list[Inner]


def test_arrow_schema_maps_every_kind_of_field() -> None:
    schema = arrow_schema(Everything)
    expected = {
        "s": (pa.string(), False),
        "i": (pa.int64(), False),
        "f": (pa.float64(), False),
        "b": (pa.bool_(), False),
        "ts": (pa.timestamp("us", tz="UTC"), False),
        "colour": (pa.string(), False),
        "lit": (pa.string(), False),
        "maybe_int": (pa.int64(), True),
        "maybe_ts": (pa.timestamp("us", tz="UTC"), True),
        "colours": (pa.list_(pa.string()), False),
        "names": (pa.list_(pa.string()), False),
        "meta": (pa.string(), False),
        "anything": (pa.string(), False),
        "inner": (pa.string(), False),
        "inners": (pa.string(), False),
        "either": (pa.string(), False),
    }
    assert schema.names == list(expected)  # declaration order
    for name, (arrow_type, nullable) in expected.items():
        assert schema.field(name).type == arrow_type, name
        assert schema.field(name).nullable is nullable, name


def test_arrow_schema_exclude_and_real_models() -> None:
    schema = arrow_schema(Invocation, exclude={"runs", "scores"})
    assert "runs" not in schema.names and "scores" not in schema.names
    assert schema.names == [n for n in Invocation.model_fields if n not in {"runs", "scores"}]
    assert schema.field("status").type == pa.string()
    assert schema.field("score").nullable and not schema.field("invocation_id").nullable
    agg = arrow_schema(AggregatedRow, exclude={"standard_means"})
    assert agg.field("pass_at_k").type == pa.float64()
    assert agg.field("n_skipped").type == pa.int64()


def test_json_fields_are_json_encoded_through_the_table_builder() -> None:
    class WithJson(BaseModel):
        key: str
        meta: dict[str, Any]
        either: str | list[Inner]

    rows = [
        {"key": "a", "meta": {"k": [1, 2]}, "either": [Inner(x=1)]},
        {"key": "b", "meta": {}, "either": "plain"},
    ]
    table = results._rows_table(rows, WithJson, frozenset())
    assert table.column("meta").to_pylist() == ['{"k": [1, 2]}', "{}"]
    assert table.column("either").to_pylist() == ['[{"x": 1}]', '"plain"']


# --------------------------------------------------------------------------- tables


def test_invocations_table_columns_and_scores() -> None:
    invocations, _ = fixture_rows()
    table = invocations_table(invocations, STANDARDS)
    base = arrow_schema(Invocation, exclude={"runs", "scores"})
    assert table.schema.names == base.names + ["score__exact", "score__judge"]
    assert table.num_rows == len(invocations)
    assert table.column("score__exact").to_pylist()[:4] == [1.0, 0.0, 0.0, 1.0]
    # A standard not in a row's scores (not graded / not applicable) is null, not 0.
    assert table.column("score__judge").to_pylist()[:3] == [1.0, 1.0, None]
    assert table.column("status").to_pylist()[3] == "failed"
    assert table.column("modalities").to_pylist()[0] == ["text"]
    assert table.column("created_at").to_pylist()[0] == T0


def test_invocations_table_accepts_json_mode_dumps_and_extra_keys() -> None:
    invocation = Invocation.model_validate(inv("i1", "s1", scores={"exact": 0.25, "other": 1.0}))
    row_ = invocation.model_dump(mode="json")  # ISO timestamps, runs included
    table = invocations_table([row_], ["exact"])
    assert table.column("created_at").to_pylist() == [T0]
    assert table.column("score__exact").to_pylist() == [0.25]
    assert "score__other" not in table.schema.names


def test_missing_required_value_is_an_error_and_defaults_fill_in() -> None:
    row_ = inv("i1", "s1")
    del row_["category"]  # has a default
    table = invocations_table([row_], [])
    assert table.column("category").to_pylist() == ["uncategorised"]
    del row_["model"]  # required
    with pytest.raises(ValueError, match="model"):
        invocations_table([row_], [])


def test_empty_inputs_give_empty_tables_with_the_schema() -> None:
    invocations = invocations_table([], STANDARDS)
    generations = generations_table([])
    assert invocations.num_rows == 0 and "score__judge" in invocations.schema.names
    assert generations.schema == arrow_schema(Generation)
    aggregated = aggregate(invocations, generations, STANDARDS, 1, [])
    assert aggregated.num_rows == 0
    assert aggregated.schema == results.aggregated_schema(STANDARDS)


# --------------------------------------------------------------------------- aggregate


def test_overall_row_numbers() -> None:
    m1 = row(aggregated_fixture(), "m1")
    assert (m1["test_id"], m1["agent"], m1["n"]) == ("t1", "direct", 5)
    assert (m1["n_completed"], m1["n_failed"], m1["n_queued"]) == (3, 1, 1)
    assert (m1["n_terminated"], m1["n_running"], m1["n_skipped"]) == (0, 0, 1)
    # Completed scores 1.0, 0.5, 0.0: mean 0.5, sample std 0.5, stderr 0.5/sqrt(3).
    assert m1["mean_score"] == pytest.approx(0.5)
    assert m1["stderr"] == pytest.approx(0.5 / math.sqrt(3))
    # 0.5 -/+ 1.96 * 0.2887 = -0.066 / 1.066: clamped to [0, 1].
    assert m1["ci95_low"] == 0.0 and m1["ci95_high"] == 1.0
    assert m1["pass_rate"] == pytest.approx(2 / 3)
    assert m1["pass_at_k"] is None and m1["k"] == 1
    assert (m1["input_tokens"], m1["output_tokens"]) == (350, 30)
    # Latency of completed ones only (1, 2, 3; the failed 100 s is out): linear percentiles.
    assert m1["latency_p50_s"] == pytest.approx(2.0)
    assert m1["latency_p95_s"] == pytest.approx(2.9)
    # Per-standard means over completed invocations; the failed run's exact=1.0 is out.
    assert m1["score__exact"] == pytest.approx(1 / 3)
    assert m1["score__judge"] == pytest.approx(1.0)


def test_failure_inclusive_means_count_failed_cells_as_zero() -> None:
    aggregated = aggregated_fixture()
    m1 = row(aggregated, "m1")
    # Completed 1.0 (pass), 0.5 (pass), 0.0 (fail) and the failed i4 as 0; queued i5 is out.
    assert m1["mean_score"] == pytest.approx(0.5)
    assert m1["mean_score_all"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.0) / 4)
    assert m1["pass_rate_all"] == pytest.approx(2 / 4)
    # Sample std of [1, .5, 0, 0]: sqrt(0.6875 / 3); stderr = std / sqrt(4).
    stderr = math.sqrt(0.6875 / 3) / 2
    assert m1["stderr_all"] == pytest.approx(stderr)
    assert m1["ci95_low_all"] == 0.0  # 0.375 - 1.96 * 0.239 < 0: clamped to [0, 1]
    assert m1["ci95_high_all"] == pytest.approx(0.375 + 1.96 * stderr)
    assert m1["n_grading_failed"] == 0
    # Category B: completed 0.0 and the failed i4: both means 0.
    b = row(aggregated, "m1", "B")
    assert (b["mean_score"], b["mean_score_all"], b["pass_rate_all"]) == (0.0, 0.0, 0.0)
    # m2 has no failed invocation (terminated and running ones are not failures): same means.
    m2 = row(aggregated, "m2")
    assert m2["mean_score_all"] == m2["mean_score"] == pytest.approx(0.8)
    assert m2["pass_rate_all"] == m2["pass_rate"] == 1.0 and m2["stderr_all"] is None


def test_grading_failures_and_ungraded_categories_are_not_zeros() -> None:
    invocations, generations = fixture_rows()
    invocations += [
        # Failed in grading: the score is unknown, not 0.
        inv("j4", "s4", model="m2", status=Status.failed, error_type="judge_error"),
        # A category no standard grades: a completed one would have no score either.
        inv("j5", "s5", model="m2", category="Z", status=Status.failed, error_type="Timeout"),
    ]
    tables = (invocations_table(invocations, STANDARDS), generations_table(generations))
    graded = aggregate(*tables, STANDARDS, 1, graded_categories={"A", "B"})
    m2 = row(graded, "m2")
    assert (m2["n_failed"], m2["n_grading_failed"]) == (2, 1)
    assert m2["mean_score_all"] == pytest.approx(0.8) and m2["pass_rate_all"] == 1.0
    assert row(graded, "m2", "A")["n_grading_failed"] == 1
    # Without the rubric's categories every category is graded: j5 counts as 0.
    m2 = row(aggregate(*tables, STANDARDS, 1), "m2")
    assert m2["mean_score_all"] == pytest.approx(0.4) and m2["pass_rate_all"] == 0.5


def test_leaderboard_marks_rows_whose_failure_inclusive_means_differ(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from glow.cli import print_leaderboard

    board = {r["model"]: r for r in leaderboard(aggregated_fixture())}
    assert board["m1"]["marker"] == results.FAILURES_MARKER
    assert board["m1"]["mean_score_all"] == pytest.approx(0.375)
    assert board["m1"]["pass_rate_all"] == pytest.approx(0.5)
    assert board["m2"]["marker"] == ""
    print_leaderboard(list(board.values()), "Leaderboard")
    out = capsys.readouterr().out
    assert f"0.500{results.FAILURES_MARKER}" in out and "0.375" in out
    assert f"0.800{results.FAILURES_MARKER}" not in out
    assert "counts them as 0" in out
    # AggregatedResults rows (per category, as `glow results --categories` prints them) too.
    rows = [r for r in aggregated_fixture().to_pylist() if r["category"] != "*"]
    print_leaderboard(rows, "category")
    assert "category" in capsys.readouterr().out


def test_costs_come_from_generations_and_unknown_is_never_zero() -> None:
    aggregated = aggregated_fixture()
    m1, m2 = row(aggregated, "m1"), row(aggregated, "m2")
    assert m1["model_cost_usd"] == pytest.approx(0.04)
    assert m1["judge_cost_usd"] == pytest.approx(0.004)
    assert m1["cost_usd"] == pytest.approx(0.044)
    assert m1["cost_unknown_calls"] == 0
    # One generation with an unknown price makes m2's model cost unknown, and so its total.
    assert m2["model_cost_usd"] is None and m2["cost_usd"] is None
    assert m2["judge_cost_usd"] == 0.0  # no judge calls at all: nothing spent
    assert m2["cost_unknown_calls"] == 1
    assert all(r["model"] != "judge-model" for r in aggregated.to_pylist())

    totals = summary(aggregated)
    assert totals["cost_unknown_models"] == ["m2"]
    assert totals["by_model"]["m1"] == pytest.approx(0.044)
    assert totals["by_model"]["m2"] is None
    assert totals["by_test"] == {"t1": None}
    assert totals["total_cost_usd"] is None
    assert totals["cost_unknown_calls"] == 1


def test_summary_with_every_price_known() -> None:
    invocations, generations = fixture_rows()
    priced = [g for g in generations if g["cost_usd"] is not None]
    aggregated = aggregate(
        invocations_table(invocations, STANDARDS), generations_table(priced), STANDARDS, 1, []
    )
    totals = summary(aggregated)
    assert totals["cost_unknown_models"] == []
    assert totals["by_model"]["m2"] == pytest.approx(0.03)
    assert totals["by_test"]["t1"] == pytest.approx(0.074)
    assert totals["total_cost_usd"] == pytest.approx(0.074)


def test_per_category_rows_and_skipped_cells() -> None:
    aggregated = aggregated_fixture()
    keys = [(r["model"], r["category"]) for r in aggregated.to_pylist()]
    assert keys == [
        ("m1", "*"),
        ("m1", "A"),
        ("m1", "B"),
        ("m1", "C"),
        ("m2", "*"),
        ("m2", "A"),
        ("m2", "B"),
    ]
    a = row(aggregated, "m1", "A")
    assert (a["n"], a["n_completed"], a["n_skipped"]) == (2, 2, 0)
    assert a["mean_score"] == pytest.approx(0.75)
    assert a["stderr"] == pytest.approx(0.25)  # std 0.3536 / sqrt(2)
    assert a["ci95_low"] == pytest.approx(0.75 - 1.96 * 0.25)
    assert a["ci95_high"] == 1.0
    assert a["pass_rate"] == 1.0
    assert a["cost_usd"] == pytest.approx(0.024)
    b = row(aggregated, "m1", "B")
    assert (b["n"], b["n_completed"], b["n_failed"], b["n_queued"]) == (3, 1, 1, 1)
    assert b["mean_score"] == 0.0 and b["pass_rate"] == 0.0
    assert b["stderr"] is None and b["ci95_low"] is None and b["ci95_high"] is None
    assert b["score__judge"] is None  # the one completed invocation had no judge score
    # s6 was skipped: its category comes from skipped_categories; nothing ran or was spent.
    c = row(aggregated, "m1", "C")
    assert (c["n"], c["n_skipped"], c["mean_score"], c["cost_usd"]) == (0, 1, None, 0.0)
    # m2's skipped s1 takes its category (A) from another model's invocation of s1.
    m2a = row(aggregated, "m2", "A")
    assert (m2a["n"], m2a["n_skipped"], m2a["n_terminated"]) == (2, 1, 1)
    assert m2a["mean_score"] == pytest.approx(0.8) and m2a["stderr"] is None
    m2b = row(aggregated, "m2", "B")
    assert (m2b["n_running"], m2b["mean_score"], m2b["latency_p50_s"]) == (1, None, None)
    assert row(aggregated, "m2")["n_skipped"] == 1


def test_skipped_only_model_gets_rows() -> None:
    invocations, generations = fixture_rows()
    aggregated = aggregate(
        invocations_table(invocations, STANDARDS),
        generations_table(generations),
        STANDARDS,
        1,
        [SkippedCell(scenario_id="s9", model="m3", agent="direct", missing=[Modality.video])],
    )
    m3 = row(aggregated, "m3")
    assert (m3["test_id"], m3["n"], m3["n_skipped"], m3["cost_usd"]) == ("t1", 0, 1, 0.0)
    assert row(aggregated, "m3", "uncategorised")["n_skipped"] == 1


def test_pass_at_k_with_three_epochs() -> None:
    def epochs(scenario: str, outcomes: list[bool | None]) -> list[dict[str, Any]]:
        return [
            inv(
                f"{scenario}-e{e}",
                scenario,
                epoch=e,
                status=Status.failed if ok is None else Status.completed,
                score=None if ok is None else float(ok),
                passed=ok,
            )
            for e, ok in enumerate(outcomes, start=1)
        ]

    rows = [
        *epochs("s1", [True, False, False]),  # any passed: 1
        *epochs("s2", [False, False, False]),  # 0
        *epochs("s3", [True, True, True]),  # 1
        *epochs("s4", [False, False, None]),  # 2 graded epochs, none passed: 0
        *epochs("s5", [True, None, None]),  # 1 graded epoch, passed: 1
    ]
    table = invocations_table(rows, STANDARDS)
    overall = row(aggregate(table, generations_table([]), STANDARDS, 3, []), "m1")
    assert overall["k"] == 3
    assert overall["pass_at_k"] == pytest.approx(3 / 5)
    assert overall["pass_rate"] == pytest.approx(5 / 12)  # 5 passes of 12 graded


def test_pass_at_k_uses_the_unbiased_estimator() -> None:
    # Five epochs of one scenario, two passed, k = 2: 1 - C(3, 2) / C(5, 2) = 1 - 3/10.
    outcomes = [True, True, False, False, False]
    rows = [
        inv(f"e{e}", "s1", epoch=e, score=float(ok), passed=ok)
        for e, ok in enumerate(outcomes, start=1)
    ]
    table = invocations_table(rows, [])
    overall = row(aggregate(table, generations_table([]), [], 2, []), "m1")
    assert overall["pass_at_k"] == pytest.approx(0.7)
    assert overall["k"] == 2


def test_duplicate_invocation_ids_are_refused() -> None:
    rows = [inv("same", "s1"), inv("same", "s2")]
    with pytest.raises(ValueError, match="duplicate"):
        aggregate(invocations_table(rows, []), generations_table([]), [], 1, [])


def test_leaderboard_orders_by_mean_score() -> None:
    invocations, generations = fixture_rows()
    invocations.append(inv("k1", "s1", model="m0", status=Status.queued))  # ungraded
    aggregated = aggregate(
        invocations_table(invocations, STANDARDS),
        generations_table(generations),
        STANDARDS,
        1,
        [],
    )
    board = leaderboard(aggregated)
    assert [r["model"] for r in board] == ["m2", "m1", "m0"]  # 0.8, 0.5, None last
    assert [r["rank"] for r in board] == [1, 2, 3]
    first = board[1]
    assert tuple(first) == results.LEADERBOARD_FIELDS
    assert (first["n"], first["completed"], first["failed"]) == (5, 3, 1)
    assert first["mean_score"] == pytest.approx(0.5)
    assert first["cost_usd"] == pytest.approx(0.044)
    assert first["latency_p50_s"] == pytest.approx(2.0)


# --------------------------------------------------------------------------- parquet


def test_write_results_files_are_readable(tmp_path: Path) -> None:
    invocations, generations = fixture_rows()
    inv_table = invocations_table(invocations, STANDARDS)
    gen_table = generations_table(generations)
    aggregated = aggregated_fixture()
    paths = write_results(tmp_path / "t1", inv_table, gen_table, aggregated)

    assert set(paths) == {"invocations", "generations", "aggregated"}
    frames = {name: pd.read_parquet(path) for name, path in paths.items()}
    assert len(frames["invocations"]) == len(invocations)
    assert len(frames["generations"]) == len(generations)
    assert len(frames["aggregated"]) == aggregated.num_rows
    for name in ("invocations", "aggregated"):
        assert {"score__exact", "score__judge"} <= set(frames[name].columns)
    assert frames["aggregated"]["cost_usd"].isna().sum() == 2  # m2 overall and m2/A
    for name, path in paths.items():
        metadata = pq.read_schema(path).metadata
        assert metadata[b"glow_schema_version"] == b"1"
        assert metadata[b"glow_table"] == name.encode()
    assert pq.ParquetFile(paths["invocations"]).metadata.row_group(0).column(0).compression in {
        "ZSTD",
        "SNAPPY",
    }
    assert sorted(os.listdir(tmp_path / "t1")) == [
        "aggregated.parquet",
        "generations.parquet",
        "invocations.parquet",
    ]


def test_write_results_replaces_atomically(tmp_path: Path) -> None:
    invocations, generations = fixture_rows()
    inv_table = invocations_table(invocations, STANDARDS)
    gen_table = generations_table(generations)
    aggregated = aggregated_fixture()
    write_results(tmp_path, inv_table, gen_table, aggregated)

    # A second export with fewer invocations replaces the first.
    paths = write_results(tmp_path, inv_table.slice(0, 2), gen_table, aggregated)
    assert len(pd.read_parquet(paths["invocations"])) == 2

    # A write that fails part-way leaves the previous file whole and no temp file behind.
    with pytest.raises((TypeError, AttributeError, pa.ArrowException)):
        write_results(tmp_path, inv_table, gen_table, "not a table")  # type: ignore[arg-type]
    assert len(pd.read_parquet(paths["aggregated"])) == aggregated.num_rows
    assert sorted(os.listdir(tmp_path)) == [
        "aggregated.parquet",
        "generations.parquet",
        "invocations.parquet",
    ]


def test_module_docstring_documents_every_column() -> None:
    doc = results.__doc__ or ""
    columns = (
        set(arrow_schema(Invocation, exclude={"runs", "scores"}).names)
        | set(arrow_schema(Generation).names)
        | set(results.aggregated_schema([]).names)
    )
    missing = sorted(c for c in columns if f"``{c}``" not in doc)
    assert not missing, f"undocumented parquet columns: {missing}"
    assert "``score__<standard>``" in doc


# --------------------------------------------------------------------------- scale


def test_two_hundred_thousand_rows_aggregate(tmp_path: Path) -> None:
    """A sanity check of the vectorised path, not a timing assertion."""
    n = 200_000
    models, agents, categories = ["a", "b", "c", "d"], ["x", "y"], ["c0", "c1", "c2"]

    def rows() -> Any:
        for i in range(n):
            yield {
                "invocation_id": f"inv-{i}",
                "test_id": "big",
                "scenario_id": f"s{i // 24}",
                "category": categories[(i // 24) % 3],
                "model": models[i % 4],
                "agent": agents[(i // 4) % 2],
                "provider": "openai",
                "epoch": (i // 8) % 3 + 1,
                "modalities": ["text"],
                "status": "completed" if i % 10 else "failed",
                "attempts": 1,
                "output": "ok",
                "scores": {"exact": float(i % 2)},
                "score": float(i % 2),
                "passed": bool(i % 2),
                "input_tokens": 10,
                "output_tokens": 1,
                "latency_s": 0.5,
                "created_at": T0,
            }

    def generation_rows() -> Any:
        for i in range(n):
            yield {
                "generation_id": f"g-{i}",
                "test_id": "big",
                "invocation_id": f"inv-{i}",
                "run_id": "r",
                "model": models[i % 4],
                "litellm_model": "openai/x",
                "provider": "openai",
                "cost_usd": 0.001,
                "created_at": T0,
            }

    inv_table = invocations_table(rows(), ["exact"])
    gen_table = generations_table(generation_rows())
    aggregated = aggregate(inv_table, gen_table, ["exact"], 3, [])
    overall = aggregated.filter(pc.equal(aggregated.column("category"), "*"))
    assert overall.num_rows == 8
    assert sum(overall.column("n").to_pylist()) == n
    assert sum(overall.column("input_tokens").to_pylist()) == 10 * n
    assert sum(overall.column("cost_usd").to_pylist()) == pytest.approx(0.001 * n)
    assert aggregated.num_rows == 8 + 8 * 3
    paths = write_results(tmp_path, inv_table, gen_table, aggregated)
    assert len(pd.read_parquet(paths["invocations"], columns=["invocation_id"])) == n
