"""AggregatedResults: a test's invocations grouped per (test, model, agent) and per category.

`aggregate` builds the ``aggregated.parquet`` table (counts by status, means with clustered
standard errors, failure-inclusive means, pass@k, tokens, costs, latency percentiles, per-standard
means); `leaderboard` and `summary` read its overall rows for people (the CLI, the artifacts).
The columns are documented in the `glow.results` package docstring; the statistics themselves
(clustered standard errors, pass@k) are `glow.stats`.

Whole columns with pandas / numpy, no Python per invocation: a test can hold a million of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from glow import stats
from glow.models import GRADING_ERRORS, SkippedCell, Status
from glow.results.schema import OVERALL, aggregated_schema, score_column

_OVERALL_KEYS = ["test_id", "model", "agent"]
_CATEGORY_KEYS = [*_OVERALL_KEYS, "category"]
_STATUS_COUNTS = {
    "n_completed": Status.completed,
    "n_failed": Status.failed,
    "n_terminated": Status.terminated,
    "n_queued": Status.queued,
    "n_running": Status.running,
}
_INT_COLUMNS = [
    "n",
    *_STATUS_COUNTS,
    "n_skipped",
    "n_grading_failed",
    "input_tokens",
    "output_tokens",
    "cost_unknown_calls",
]


def _frame(table: pa.Table, categorical: Sequence[str], floats: Sequence[str]) -> pd.DataFrame:
    """The needed columns as pandas: keys dictionary-encoded (cheap groupby and take), floats
    (including bool -> 0/1) with NaN for null so pandas' skipna aggregations apply."""
    data: dict[str, Any] = {}
    for name in categorical:
        data[name] = table.column(name).dictionary_encode().to_pandas()
    for name in floats:
        if name in table.column_names:
            data[name] = table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:  # a standard no row was graded on (or a table built for other standards)
            data[name] = np.full(table.num_rows, np.nan)
    return pd.DataFrame(data)


def _groups(frame: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group of `keys` (categorical columns) as one dense code, 0.. in key order,
    and a row of each group (its first), where the group's key values can be read.

    Pandas groups by one integer far more cheaply than by several categoricals, and reduces
    each group's rows in the same order, so the sums are the same.
    """
    combined = np.zeros(len(frame), dtype=np.int64)
    for key in keys:
        codes = frame[key].cat.codes.to_numpy().astype(np.int64)
        combined = combined * (len(frame[key].cat.categories) + 1) + codes + 1  # null: 0
    _, first, dense = np.unique(combined, return_index=True, return_inverse=True)
    return dense.reshape(-1), first


def _failed_as_zero(inv: pd.DataFrame, graded_categories: Collection[str] | None) -> np.ndarray:
    """Which invocations count as a 0 in the failure-inclusive means: failed ones, minus those
    that failed in grading (score unknown) and those of a category the rubric does not grade."""
    failed = (inv["status"] == Status.failed.value).to_numpy()
    grading = inv["error_type"].isin(list(GRADING_ERRORS)).to_numpy()
    graded = np.ones(len(inv), dtype=bool)
    if graded_categories is not None:
        graded = inv["category"].isin(list(graded_categories)).to_numpy()
    return failed & ~grading & graded


def _level(
    inv: pd.DataFrame,
    gen: pd.DataFrame,
    position: np.ndarray,
    skipped: pd.DataFrame,
    keys: list[str],
    standards: Sequence[str],
    epochs: int,
    clusters: np.ndarray,
    as_zero: np.ndarray,
) -> pd.DataFrame:
    """AggregatedResults rows for one grouping (overall or per category). `position` is each
    generation's invocation row (see `_invocation_positions`); -1 ones are left out. `clusters`
    is each invocation's cluster code for the standard error (see `aggregate`); `as_zero`
    marks the failed invocations the `*_all` columns count as 0 (see `_failed_as_zero`)."""
    groups, first = _groups(inv, keys)
    completed = (inv["status"] == Status.completed.value).to_numpy()
    work = pd.DataFrame(index=inv.index)
    for column, status in _STATUS_COUNTS.items():
        work[column] = (inv["status"] == status.value).astype(np.int64)
    work["n_grading_failed"] = (
        (inv["status"] == Status.failed.value) & inv["error_type"].isin(list(GRADING_ERRORS))
    ).astype(np.int64)
    work["input_tokens"] = inv["input_tokens"]
    work["output_tokens"] = inv["output_tokens"]
    # Scores of anything but completed invocations (a failed run's partial grade) don't count.
    work["score"] = inv["score"].where(completed)
    work["passed"] = inv["passed"].where(completed)
    work["score_all"] = work["score"].mask(as_zero, 0.0)
    work["passed_all"] = work["passed"].mask(as_zero, 0.0)
    work["latency"] = inv["latency_s"].where(completed)
    score_columns = [score_column(s) for s in standards]
    for column in score_columns:
        work[column] = inv[column].where(completed)

    grouped = work.groupby(groups)
    out = grouped.agg(
        n=("n_completed", "size"),
        **{column: (column, "sum") for column in _STATUS_COUNTS},
        n_grading_failed=("n_grading_failed", "sum"),
        input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"),
        mean_score=("score", "mean"),
        score_std=("score", "std"),
        score_count=("score", "count"),
        pass_rate=("passed", "mean"),
        mean_score_all=("score_all", "mean"),
        score_std_all=("score_all", "std"),
        score_count_all=("score_all", "count"),
        pass_rate_all=("passed_all", "mean"),
        **{column: (column, "mean") for column in score_columns},
    )
    out["score_stderr"] = stats.grouped_clustered_stderr(
        groups, clusters, work["score"].to_numpy(dtype=np.float64)
    )
    out["score_stderr_all"] = stats.grouped_clustered_stderr(
        groups, clusters, work["score_all"].to_numpy(dtype=np.float64)
    )
    latency = grouped["latency"].quantile([0.5, 0.95]).unstack().reindex(columns=[0.5, 0.95])
    out["latency_p50_s"] = latency[0.5]
    out["latency_p95_s"] = latency[0.95]
    if epochs > 1:
        graded = work["passed"].notna().to_numpy()
        scenarios = inv["scenario_id"].cat.codes.to_numpy().astype(np.int64)
        out["pass_at_k"] = stats.grouped_pass_at_k(
            groups[graded], scenarios[graded], work["passed"].to_numpy()[graded], epochs
        )
    else:
        out["pass_at_k"] = np.nan

    known = position >= 0
    cost = gen["cost_usd"].to_numpy()[known]
    role_model = (gen["role"] == "model").to_numpy()[known]
    role_judge = (gen["role"] == "judge").to_numpy()[known]
    unknown = np.isnan(cost)
    costs = pd.DataFrame(
        {
            "model_cost_usd": np.where(role_model & ~unknown, cost, 0.0),
            "judge_cost_usd": np.where(role_judge & ~unknown, cost, 0.0),
            "model_unknown": (role_model & unknown).astype(np.int64),
            "judge_unknown": (role_judge & unknown).astype(np.int64),
        }
    )
    out = out.join(costs.groupby(groups[position[known]]).sum())

    for key in keys:
        out[key] = inv[key].take(first[out.index.to_numpy()]).astype(str).to_numpy()
    out = out.reset_index(drop=True)
    counts = skipped.groupby(keys).size().rename("n_skipped").reset_index()
    out = out.merge(counts, on=keys, how="outer")
    # Groups with no invocations (all skipped), or no generations: nothing ran, nothing was spent.
    fill_zero = [*_STATUS_COUNTS, "n", "n_skipped", "input_tokens", "output_tokens", "score_count"]
    fill_zero += ["n_grading_failed", "score_count_all"]
    fill_zero += ["model_cost_usd", "judge_cost_usd", "model_unknown", "judge_unknown"]
    out[fill_zero] = out[fill_zero].fillna(0)

    out["stderr"] = out["score_stderr"]
    out["ci95_low"] = (out["mean_score"] - 1.96 * out["stderr"]).clip(0.0, 1.0)
    out["ci95_high"] = (out["mean_score"] + 1.96 * out["stderr"]).clip(0.0, 1.0)
    out["stderr_all"] = out["score_stderr_all"]
    out["ci95_low_all"] = (out["mean_score_all"] - 1.96 * out["stderr_all"]).clip(0.0, 1.0)
    out["ci95_high_all"] = (out["mean_score_all"] + 1.96 * out["stderr_all"]).clip(0.0, 1.0)
    out["k"] = epochs if epochs > 1 else 1
    # Unknown is never 0: one unpriced call makes the whole sum unknown.
    out["model_cost_usd"] = out["model_cost_usd"].where(out["model_unknown"] == 0)
    out["judge_cost_usd"] = out["judge_cost_usd"].where(out["judge_unknown"] == 0)
    out["cost_usd"] = out["model_cost_usd"] + out["judge_cost_usd"]  # NaN if either is
    out["cost_unknown_calls"] = out["model_unknown"] + out["judge_unknown"]
    if "category" not in keys:
        out["category"] = OVERALL
    return out


def _invocation_positions(invocation_ids: pa.ChunkedArray, owners: pa.ChunkedArray) -> np.ndarray:
    """For each of `owners` (a generation's invocation_id), the row of that invocation in
    `invocation_ids`, or -1; raises ValueError if `invocation_ids` has duplicates.

    One Arrow hash pass over both columns (hashing a million ids is the costly part): dictionary
    codes follow first appearance, so unique invocation ids get codes 0..n-1 in row order, and
    an owner's code is its invocation's row when below n.
    """
    n = len(invocation_ids)
    chunks = [*invocation_ids.chunks, *owners.chunks]
    both = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    codes = pc.fill_null(both.dictionary_encode().indices, -1).to_numpy()
    if not np.array_equal(codes[:n], np.arange(n)):
        raise ValueError("invocations has duplicate invocation_id values")
    owner_codes = codes[n:].astype(np.int64)
    return np.where(owner_codes < n, owner_codes, -1)


def aggregate(
    invocations: pa.Table,
    generations: pa.Table,
    standards: Sequence[str],
    epochs: int,
    skipped: Sequence[SkippedCell] = (),
    *,
    skipped_categories: Mapping[str, str] | None = None,
    test_id: str | None = None,
    clusters: Mapping[str, str] | None = None,
    graded_categories: Collection[str] | None = None,
) -> pa.Table:
    """Build AggregatedResults: per (test, model, agent) overall rows (category "*") and per
    category rows. See the `glow.results` package docstring for every column's meaning.

    `graded_categories` are the categories the rubric has an applicable standard for (None:
    all): a failed invocation of another category is not counted as 0 by the `*_all` columns.

    `skipped` cells are counted in `n_skipped`. A SkippedCell names only its scenario, so its
    category comes from `skipped_categories` (scenario_id -> category), else from any invocation
    of the same scenario, else "uncategorised". Skipped cells belong to `test_id`, which defaults
    to the invocations' single test id. Generations are attributed to groups through their
    invocation; generations of invocations not in `invocations` are ignored.

    The standard error is clustered (`glow.stats.grouped_clustered_stderr`) by scenario, so a
    scenario's epochs are one cluster, or by `clusters` (scenario_id -> value of the test's
    `cluster_by` metadata key; a scenario missing from it is a cluster of its own).
    """
    standards = list(standards)
    schema = aggregated_schema(standards)
    score_columns = [score_column(s) for s in standards]

    inv = _frame(
        invocations,
        ["test_id", "model", "agent", "category", "status", "scenario_id", "error_type"],
        ["score", "passed", "latency_s", *score_columns],
    )
    as_zero = _failed_as_zero(inv, graded_categories)
    inv["input_tokens"] = invocations.column("input_tokens").to_numpy()
    inv["output_tokens"] = invocations.column("output_tokens").to_numpy()
    # Attribute each generation to its invocation's group (a judge's `model` is the judge's).
    position = _invocation_positions(
        invocations.column("invocation_id"), generations.column("invocation_id")
    )
    gen = _frame(generations, ["role"], ["cost_usd"])

    skipped_frame = _skipped_frame(invocations, skipped, skipped_categories, test_id)
    cluster_codes = stats.cluster_labels(inv["scenario_id"], clusters)
    levels = [
        _level(inv, gen, position, skipped_frame, keys, standards, epochs, cluster_codes, as_zero)
        for keys in (_OVERALL_KEYS, _CATEGORY_KEYS)
    ]
    out = pd.concat(levels, ignore_index=True)
    out = out.sort_values(_CATEGORY_KEYS, kind="stable", ignore_index=True)
    for column in _INT_COLUMNS:
        out[column] = out[column].astype(np.int64)
    return pa.Table.from_arrays(
        [pa.array(out[f.name].to_numpy(), f.type, from_pandas=True) for f in schema],
        schema=schema,
    )


def _skipped_frame(
    invocations: pa.Table,
    skipped: Sequence[SkippedCell],
    skipped_categories: Mapping[str, str] | None,
    test_id: str | None,
) -> pd.DataFrame:
    """Skipped cells as (test_id, model, agent, category) rows, categories resolved."""
    columns = _CATEGORY_KEYS
    if not skipped:
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in columns})
    if test_id is None:
        test_ids = pc.unique(invocations.column("test_id")).to_pylist()
        if len(test_ids) > 1:
            raise ValueError("skipped cells with several tests' invocations: pass test_id=")
        test_id = test_ids[0] if test_ids else ""
    wanted = {cell.scenario_id for cell in skipped}
    lookup: dict[str, str] = {}
    if wanted:
        mask = pc.is_in(invocations.column("scenario_id"), pa.array(list(wanted), pa.string()))
        pairs = invocations.filter(mask).select(["scenario_id", "category"])
        scenario_ids = pairs.column("scenario_id").to_pylist()
        lookup = dict(zip(scenario_ids, pairs.column("category").to_pylist(), strict=True))
    lookup.update(skipped_categories or {})
    rows = [
        (test_id, c.model, c.agent, lookup.get(c.scenario_id, "uncategorised")) for c in skipped
    ]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- reporting


def _sum_known(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def summary(aggregated: pa.Table) -> dict[str, Any]:
    """Cost totals for the CLI and artifacts, from the overall rows of AggregatedResults.

    Returns ``total_cost_usd`` (all tests), ``by_test`` and ``by_model`` (test id / model name ->
    USD), ``cost_unknown_models`` (sorted model names with an unknown cost) and
    ``cost_unknown_calls``. A total is None as soon as one of its parts is unknown.
    """
    rows = aggregated.filter(pc.equal(aggregated.column("category"), OVERALL))
    rows = rows.select(["test_id", "model", "cost_usd", "cost_unknown_calls"]).to_pylist()
    by_test: dict[str, list[float | None]] = {}
    by_model: dict[str, list[float | None]] = {}
    for row in rows:  # one row per (test, model, agent): small
        by_test.setdefault(row["test_id"], []).append(row["cost_usd"])
        by_model.setdefault(row["model"], []).append(row["cost_usd"])
    model_totals = {model: _sum_known(costs) for model, costs in sorted(by_model.items())}
    return {
        "total_cost_usd": _sum_known(r["cost_usd"] for r in rows),
        "by_test": {test: _sum_known(costs) for test, costs in sorted(by_test.items())},
        "by_model": model_totals,
        "cost_unknown_models": [m for m, total in model_totals.items() if total is None],
        "cost_unknown_calls": sum(r["cost_unknown_calls"] for r in rows),
    }


LEADERBOARD_FIELDS = (
    "rank",
    "test_id",
    "model",
    "agent",
    "n",
    "completed",
    "failed",
    "mean_score",
    "ci95_low",
    "ci95_high",
    "pass_rate",
    "mean_score_all",
    "pass_rate_all",
    "marker",
    "pass_at_k",
    "cost_usd",
    "latency_p50_s",
)

FAILURES_MARKER = "\u2020"  # a dagger: "failed invocations are left out of this mean"


def failures_marker(row: Mapping[str, Any]) -> str:
    """`FAILURES_MARKER` when a row's mean or pass rate changes once failed invocations count
    as 0 (`mean_score_all`, `pass_rate_all`), else "": a leaderboard must not let a model that
    fails on the hard items look better without saying so."""

    def differs(a: Any, b: Any) -> bool:
        a = None if a is None or a != a else float(a)  # NaN (pandas rows) is unknown too
        b = None if b is None or b != b else float(b)
        if a is None or b is None:
            return (a is None) != (b is None)
        return abs(a - b) > 1e-12

    return (
        FAILURES_MARKER
        if differs(row.get("mean_score"), row.get("mean_score_all"))
        or differs(row.get("pass_rate"), row.get("pass_rate_all"))
        else ""
    )


def leaderboard(aggregated: pa.Table) -> list[dict[str, Any]]:
    """Overall rows (category "*") best first, with the fields a person compares.

    Sorted by mean_score descending (ungraded rows last), then pass_rate, then model and agent
    for a stable order. Keys are `LEADERBOARD_FIELDS`; values are plain Python (None = unknown).
    `marker` is `FAILURES_MARKER` when the means with failed invocations counted as 0
    (`mean_score_all`, `pass_rate_all`) differ from `mean_score` / `pass_rate` (see
    `failures_marker`), else "".
    """
    rows = aggregated.filter(pc.equal(aggregated.column("category"), OVERALL)).to_pylist()

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        score, rate = row["mean_score"], row["pass_rate"]
        return (
            score is None,
            -(score or 0.0),
            rate is None,
            -(rate or 0.0),
            row["model"],
            row["agent"],
        )

    return [
        {
            "rank": rank,
            "test_id": row["test_id"],
            "model": row["model"],
            "agent": row["agent"],
            "n": row["n"],
            "completed": row["n_completed"],
            "failed": row["n_failed"],
            "mean_score": row["mean_score"],
            "ci95_low": row["ci95_low"],
            "ci95_high": row["ci95_high"],
            "pass_rate": row["pass_rate"],
            "mean_score_all": row["mean_score_all"],
            "pass_rate_all": row["pass_rate_all"],
            "marker": failures_marker(row),
            "pass_at_k": row["pass_at_k"],
            "cost_usd": row["cost_usd"],
            "latency_p50_s": row["latency_p50_s"],
        }
        for rank, row in enumerate(sorted(rows, key=order), start=1)
    ]
