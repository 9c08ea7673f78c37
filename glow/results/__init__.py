"""AggregatedResults and the parquet files of a test.

A finished (or partly finished) test is exported as parquet files, by default under
`data/results/<test_id>/`. The Arrow schemas of invocations, generations and aggregated are
*derived* from the pydantic models in `glow.models` by `arrow_schema`, so the files and the store
never drift apart (pairwise and regression are fixed in `glow.comparison`); every file carries
`glow_schema_version` (currently "1") and `glow_table` in its parquet key-value metadata.

Everything here works on whole columns (pyarrow / pandas / numpy): a test can hold a million
invocations, and one pydantic object per row would cost minutes and gigabytes.

Parquet schema
==============

Types: str -> string, int -> int64, float -> float64, bool -> bool, datetime -> timestamp[us, UTC],
enums and literals -> string, lists of strings/enums -> list<string>, dicts and free-form values ->
a JSON-encoded string. A column is nullable exactly when the pydantic field is Optional.

``invocations.parquet`` -- one row per invocation (`glow.models.Invocation` minus ``runs`` and
``scores``):

- ``invocation_id``: stable id of the cell (test, scenario, model, agent, epoch).
- ``test_id``, ``scenario_id``, ``category``: which test and scenario; category from its metadata.
- ``model``, ``agent``, ``provider``: model display name, agent name, litellm provider.
- ``epoch``: 1-based repetition number of the cell.
- ``modalities``: list<string>, the modalities the scenario's input uses.
- ``status``: queued / running / completed / failed / terminated.
- ``attempts``: how many runs were started.
- ``output``: the latest run's final output (null when none).
- ``score``: weighted overall rubric score, 0..1 (null when not graded).
- ``passed``: score >= the rubric's pass threshold (null when not graded).
- ``rubric``: ``name@version`` of the grading the scores come from.
- ``input_tokens``, ``output_tokens``: tokens of the model's calls.
- ``model_cost_usd``, ``judge_cost_usd``, ``cost_usd``: as stored on the invocation; null means
  the price is unknown, never zero.
- ``latency_s``: wall time of the latest run.
- ``error_type``, ``error_message``: the last error, if any.
- ``created_at``, ``started_at``, ``finished_at``: UTC timestamps.
- ``score__<standard>``: float64, one per rubric standard, 0..1; null when not graded or the
  standard did not apply.

``generations.parquet`` -- one row per model call (`glow.models.Generation`):

- ``generation_id``, ``test_id``, ``invocation_id``, ``run_id``: what the call belongs to.
- ``role``: ``model`` (the model under test) or ``judge`` (an llm_judge standard's call).
- ``model``, ``litellm_model``, ``provider``: who was called.
- ``standard``: the standard a judge call graded (null for model calls).
- ``input_tokens``, ``output_tokens``: usage reported by the provider.
- ``cost_usd``: null when the price is unknown -- never 0.
- ``latency_s``: call latency; ``created_at``: UTC timestamp.

``aggregated.parquet`` -- AggregatedResults (`glow.models.AggregatedRow` minus
``standard_means``): one row per (test, model, agent) with ``category`` = ``"*"``, and one per
(test, model, agent, category):

- ``test_id``, ``model``, ``agent``, ``category``: the group.
- ``n``: invocations in the group; ``n_completed``, ``n_failed``, ``n_terminated``, ``n_queued``,
  ``n_running``: by status; ``n_skipped``: cells not run because the model lacks a modality.
- ``mean_score``: mean ``score`` over completed invocations with a score.
- ``stderr``: standard error of that mean, clustered by scenario (its epochs are one cluster) or
  by the test's ``cluster_by`` metadata key (`glow.stats.clustered_stderr`, CR1); without epochs
  or ``cluster_by`` it is the sample standard deviation / sqrt(count). Null below 2 clusters.
- ``ci95_low``, ``ci95_high``: mean -/+ 1.96 stderr, clamped to [0, 1].
- ``pass_rate``: fraction of completed, graded invocations that passed.
- ``mean_score_all``: the mean with failed invocations counted as 0: over the completed ones
  with a score and the failed ones, each failed invocation scoring 0. ``mean_score`` leaves
  failures out, which flatters a model that fails on the hard items; when the two differ, the
  leaderboard marks the row. Failed invocations left out of both: those that failed in grading
  (``n_grading_failed``; their score is unknown, not 0) and those of a category no standard of
  the rubric grades (a completed one would have no score either).
- ``stderr_all``, ``ci95_low_all``, ``ci95_high_all``: as ``stderr`` and ``ci95_*``, over the
  scores of ``mean_score_all``.
- ``pass_rate_all``: the pass rate with the same failed invocations counted as not passed.
- ``n_grading_failed``: failed invocations whose error type is a grading error (``judge_error``:
  the judge call failed after retries or its reply had no score; ``judge_budget_exhausted``:
  the budget refused the judge call). Their output is kept; ``glow run --resume`` or
  ``glow regrade`` grades them again without calling the model.
- ``pass_at_k``, ``k``: with epochs > 1, k = epochs and pass@k is the mean over the group's
  scenarios of the unbiased estimator 1 - C(n-c, k) / C(n, k) (n = graded completed epochs of the
  scenario, c = passes; k is clipped to n, which makes it "did any epoch pass"). Null, k = 1, when
  epochs == 1.
- ``input_tokens``, ``output_tokens``: summed over the group's invocations.
- ``model_cost_usd``, ``judge_cost_usd``: summed over the ``model`` / ``judge`` generations of
  the group's invocations (every run's, including earlier runs of re-run invocations and late
  runs that were discarded: every call paid for); null when any of them has an unknown cost.
- ``cost_usd``: model + judge; null when either is unknown.
- ``cost_unknown_calls``: number of generations whose cost is unknown.
- ``latency_p50_s``, ``latency_p95_s``: percentiles of completed invocations' ``latency_s``.
- ``score__<standard>``: mean of that standard's score over completed invocations.

``pairwise.parquet`` -- paired model comparison (`glow.comparison.pairwise_table`): for every two
model x agent combinations, one row overall (``category`` = ``"*"``) and one per category. Each
unordered pair appears once, a before b in (model, agent) order. Pairs are the (scenario, epoch)
cells both a and b completed with a score (failed, terminated and unfinished cells are left out).

- ``model_a``, ``agent_a``, ``model_b``, ``agent_b``, ``category``: what is compared, and where.
- ``n_pairs``: paired cells; ``n_clusters``: clusters among them (scenarios, or values of the
  test's ``cluster_by`` key).
- ``mean_a``, ``mean_b``: mean scores over the pairs; ``mean_diff``: mean of a - b.
- ``stderr``: clustered standard error of ``mean_diff``; ``ci95_low``, ``ci95_high``:
  mean_diff -/+ t(0.975, n_clusters - 1) stderr; ``p_value``: two-sided paired t-test with
  n_clusters - 1 degrees of freedom; ``method`` = ``paired-t-clustered`` (see `glow.stats`).
  Null below 2 clusters.
- ``wins``, ``ties``, ``losses``: pairs where a scored higher, the same, lower.

``regression.parquet`` -- the test against the previous completed run of the same test name
(`glow.comparison.regression_table`; only written when there is one), per model x agent,
overall and per category, over the cells (scenario, model, agent, epoch) both runs have:

- ``test_id``, ``base_test_id``, ``model``, ``agent``, ``category``.
- ``n_pairs``: cells both runs completed with a score; ``mean_base``, ``mean_new``: their means;
  ``delta``: mean of new - base, with ``stderr``, ``ci95_low``, ``ci95_high``, ``p_value`` as in
  ``pairwise.parquet``.
- ``newly_failing``, ``newly_passing``: cells that passed (completed and passed) in the base run
  and not in this one, and the reverse; a failed or terminated cell does not pass.
- ``cost_base_usd``, ``cost_new_usd``: ``cost_usd`` summed over those shared cells that finished
  (null when one is unknown); ``cost_delta_usd``: new - base.
"""

from __future__ import annotations

import json
import os
import tempfile
import types
import typing
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from glow import stats
from glow.comparison import cluster_labels
from glow.models import GRADING_ERRORS, AggregatedRow, Generation, Invocation, SkippedCell, Status

SCHEMA_VERSION = "1"
SCORE_PREFIX = "score__"
OVERALL = "*"

# Rows are converted in chunks so the Python objects of one chunk at a time are alive, not a
# million dicts' worth of converted lists.
_CHUNK_ROWS = 65_536
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_INVOCATION_EXCLUDE = frozenset({"runs", "scores"})
_AGGREGATED_EXCLUDE = frozenset({"standard_means"})


def score_column(standard: str) -> str:
    """Column name holding a standard's score (per invocation) or mean (aggregated)."""
    return f"{SCORE_PREFIX}{standard}"


# --------------------------------------------------------------------------- schema derivation


def _is_str_like(tp: Any) -> bool:
    """str, a str-valued enum, or a Literal of strings: all stored as Arrow strings."""
    if tp is str:
        return True
    if isinstance(tp, type) and issubclass(tp, Enum):
        return all(isinstance(member.value, str) for member in tp)
    if typing.get_origin(tp) is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(tp))
    return False


def _arrow_type(tp: Any) -> tuple[pa.DataType, bool]:
    """Arrow type of one annotation, and whether it is nullable (Optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            inner, _ = _arrow_type(args[0])
            return inner, nullable
        # A union of several shapes (str | list[Message]) has no single Arrow type: keep JSON.
        return pa.string(), nullable
    if _is_str_like(tp):
        return pa.string(), False
    if tp is bool:  # before int: bool is a subclass of int
        return pa.bool_(), False
    if tp is int:
        return pa.int64(), False
    if tp is float:
        return pa.float64(), False
    if tp is datetime:
        return _TIMESTAMP, False
    if origin is Literal:
        values = typing.get_args(tp)
        if all(isinstance(v, bool) for v in values):
            return pa.bool_(), False
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return pa.int64(), False
        return pa.string(), False
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        if len(args) == 1 and _is_str_like(args[0]):
            return pa.list_(pa.string()), False
    # dict, Any, nested models, lists of models: JSON-encoded text.
    return pa.string(), False


def _is_json_field(tp: Any) -> bool:
    """Whether values of this annotation are stored JSON-encoded (see `_arrow_type`)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) != 1 or _is_json_field(args[0])
    if _is_str_like(tp) or tp in (bool, int, float, datetime) or origin is Literal:
        return False
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        return not (len(args) == 1 and _is_str_like(args[0]))
    return True


@cache
def _arrow_schema(model: type[BaseModel], exclude: frozenset[str]) -> pa.Schema:
    fields = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        arrow_type, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def arrow_schema(model: type[BaseModel], exclude: Collection[str] = ()) -> pa.Schema:
    """Arrow schema of a pydantic model's fields, in declaration order.

    This is the single place the parquet column types come from, so adding a field to a model
    adds the column. Mapping: str -> string, int -> int64, float -> float64, bool -> bool,
    datetime -> timestamp[us, UTC], StrEnum/Literal -> string, Optional[X] -> nullable X,
    list[str]/list[StrEnum] -> list<string>, anything else (dict, Any, models) -> JSON string.
    """
    return _arrow_schema(model, frozenset(exclude))


# --------------------------------------------------------------------------- rows -> tables


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _to_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _timestamps(values: Sequence[Any] | pa.Array) -> pa.Array:
    """UTC timestamps from datetimes or text (SQLite's "YYYY-MM-DD HH:MM:SS.ffffff", ISO 8601).

    Text is parsed by Arrow a whole column at once; text without an offset is UTC, as the
    store's `UTCDateTime` reads it.
    """
    text: pa.Array | None = values if isinstance(values, pa.Array) else None
    if text is None:
        try:
            text = pa.array(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # datetimes mixed with text
    if text is not None:
        try:
            return text.cast(pa.timestamp("us")).cast(_TIMESTAMP)
        except pa.ArrowInvalid:
            pass
        try:
            return text.cast(_TIMESTAMP)
        except pa.ArrowInvalid:
            pass  # offsets on some values only
    objects = values.to_pylist() if isinstance(values, pa.Array) else values
    parsed = pd.to_datetime(pd.Series(objects, dtype=object), utc=True, format="ISO8601")
    return pa.array(parsed, _TIMESTAMP)


def _column(values: Sequence[Any] | pa.Array, field: pa.Field) -> pa.Array:
    """One column as an Arrow array of `field`'s type, from what a model dump or the store gives.

    Arrow's C++ converter takes Python values in one call, or casts an Arrow array. The
    fallbacks, still a column at a time, are for what databases return: timestamps as text,
    booleans as 0/1.
    """
    if isinstance(values, pa.Array):
        if values.type == field.type:
            return values
        if field.type == _TIMESTAMP and pa.types.is_string(values.type):
            return _timestamps(values)
        return values.cast(field.type)
    try:
        return pa.array(values, field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if field.type == _TIMESTAMP:
            return _timestamps(values)
        if field.type == pa.bool_():
            return pa.array(values, pa.int64()).cast(pa.bool_())
        raise


def _chunks(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, list[Any]]]:
    """Dict rows as column batches of `_CHUNK_ROWS` rows (keys missing from a row are None)."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, _CHUNK_ROWS)):
        names = dict.fromkeys(name for row in chunk for name in row)
        yield {name: [row.get(name) for row in chunk] for name in names}


def _columns_table(
    batches: Iterable[Mapping[str, Sequence[Any] | pa.Array]],
    model: type[BaseModel],
    exclude: frozenset[str],
    standards: Sequence[str] = (),
) -> pa.Table:
    """Convert column batches ({field: values}, values shaped as `model.model_dump()` gives
    them) to a table with the model's Arrow schema, then one float64 column per standard.

    Each column goes through Arrow's C++ converter whole, so no Python runs per row here. A
    column missing from a batch is null; extra columns are ignored. `scores` (dicts, or null) is
    read as a struct whose children are the standards: extra keys are dropped, missing ones null.
    """
    base = arrow_schema(model, exclude)
    schema = pa.schema(list(base) + [pa.field(score_column(s), pa.float64()) for s in standards])
    json_fields = {f.name for f in base if _is_json_field(model.model_fields[f.name].annotation)}
    scores_type = pa.struct([pa.field(s, pa.float64()) for s in standards])

    record_batches = []
    for batch in batches:
        length = len(next(iter(batch.values()), ()))
        arrays = []
        for field in base:
            values = batch.get(field.name)
            if values is None:
                arrays.append(pa.nulls(length, field.type))
            elif field.name in json_fields:
                arrays.append(pa.array([_to_json(v) for v in values], pa.string()))
            else:
                arrays.append(_column(values, field))
        if standards:
            scores = batch.get("scores")
            struct = (
                pa.nulls(length, scores_type) if scores is None else pa.array(scores, scores_type)
            )
            # flatten() folds a null `scores` into every standard's column.
            arrays.extend(struct.flatten())
        record_batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    table = pa.Table.from_batches(record_batches, schema=schema)

    # Arrow does not enforce `nullable=False`: a missing key with a plain default gets it, a
    # missing required value is a broken row, named here rather than written as an invalid file.
    for index, field in enumerate(base):
        if field.nullable or not table.column(index).null_count:
            continue
        default = model.model_fields[field.name].default
        if default is PydanticUndefined or default is None:
            raise ValueError(f"{model.__name__}.{field.name} is required but some rows lack it")
        filled = pc.fill_null(table.column(index), pa.scalar(default, field.type))
        table = table.set_column(index, field, filled)
    return table


def _rows_table(
    rows: Iterable[dict[str, Any]],
    model: type[BaseModel],
    exclude: frozenset[str],
    standards: Sequence[str] = (),
) -> pa.Table:
    """Convert model-dump-shaped dicts to a table (see `_columns_table`), a chunk at a time."""
    return _columns_table(_chunks(rows), model, exclude, standards)


def invocations_table(rows: Iterable[dict[str, Any]], standards: Sequence[str]) -> pa.Table:
    """Invocation rows (dicts shaped like `Invocation.model_dump()`, `runs` optional) as a table.

    The `scores` dict becomes one float64 `score__<standard>` column per rubric standard, so
    pandas users get plain columns; a standard missing from a row's scores is null.
    """
    return _rows_table(rows, Invocation, _INVOCATION_EXCLUDE, standards)


def generations_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Generation rows (dicts shaped like `Generation.model_dump()`) as a table."""
    return _rows_table(rows, Generation, frozenset())


def invocations_table_from_columns(
    batches: Iterable[Mapping[str, Sequence[Any] | pa.Array]], standards: Sequence[str]
) -> pa.Table:
    """`invocations_table` from column batches, e.g. `Store.invocation_columns`.

    The fast path for a whole test: no dict per row is ever built.
    """
    return _columns_table(batches, Invocation, _INVOCATION_EXCLUDE, standards)


def generations_table_from_columns(
    batches: Iterable[Mapping[str, Sequence[Any] | pa.Array]],
) -> pa.Table:
    """`generations_table` from column batches, e.g. `Store.generation_columns`."""
    return _columns_table(batches, Generation, frozenset())


# --------------------------------------------------------------------------- aggregation


def aggregated_schema(standards: Sequence[str]) -> pa.Schema:
    """Schema of AggregatedResults: AggregatedRow's fields, then one mean column per standard."""
    base = arrow_schema(AggregatedRow, _AGGREGATED_EXCLUDE)
    return pa.schema(list(base) + [pa.field(score_column(s), pa.float64()) for s in standards])


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

    Grouping pandas by one integer instead of several categoricals is several times cheaper
    at a million rows, and reduces each group's rows in the same order, so the same sums.
    """
    combined = np.zeros(len(frame), dtype=np.int64)
    for key in keys:
        codes = frame[key].cat.codes.to_numpy().astype(np.int64)
        combined = combined * (len(frame[key].cat.categories) + 1) + codes + 1  # null: 0
    _, first, dense = np.unique(combined, return_index=True, return_inverse=True)
    return dense.reshape(-1), first


def _pass_at_k(groups: np.ndarray, scenarios: np.ndarray, passed: np.ndarray, k: int) -> pd.Series:
    """Per group, the mean over its scenarios of 1 - C(n-c, k) / C(n, k), with k clipped to
    each scenario's n. `groups`, `scenarios` (codes) and `passed` (0/1) are the graded rows."""
    width = int(scenarios.max()) + 1 if len(scenarios) else 1
    per = pd.Series(passed).groupby(groups * width + scenarios).agg(["count", "sum"])
    n = per["count"].to_numpy(dtype=np.float64)
    c = per["sum"].to_numpy(dtype=np.float64)
    k_eff = np.minimum(n, k)
    # C(n-c, k) / C(n, k) = prod_{i<k} (n-c-i) / (n-i): a short loop over k (= epochs) instead
    # of per-scenario big-integer binomials; a factor <= 0 means some epoch must have passed.
    ratio = np.ones_like(n)
    for i in range(k):
        active = i < k_eff
        factor = np.clip((n - c - i) / np.maximum(n - i, 1.0), 0.0, None)
        ratio = np.where(active, ratio * factor, ratio)
    per_scenario = pd.Series(1.0 - ratio, index=per.index.to_numpy() // width)
    return per_scenario.groupby(level=0).mean()


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
        out["pass_at_k"] = _pass_at_k(
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
    category rows. See the module docstring for every column's meaning.

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
    cluster_codes = cluster_labels(inv["scenario_id"], clusters)
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


# --------------------------------------------------------------------------- writing


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; directories cannot be opened for fsync on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StagedFile:
    """A parquet file written in full next to where it goes, not yet in place."""

    name: str
    tmp: Path
    path: Path

    def publish(self) -> Path:
        """Move the file into place: readers see the old file or this whole one, never half."""
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def stage_result(out_dir: Path, name: str, table: pa.Table) -> StagedFile:
    """Write `table` as `<out_dir>/<name>.parquet`'s replacement (directory created if needed),
    zstd-compressed, with `glow_schema_version` and `glow_table` = `name` in its metadata.

    The temp file lives in the same directory so publishing is a same-filesystem rename, and is
    fsynced first. Arrow releases the GIL while it encodes, so a caller can stage one file on a
    thread while it builds the next, and publish them all once everything has succeeded.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.parquet"
    metadata = dict(table.schema.metadata or {})
    metadata[b"glow_schema_version"] = SCHEMA_VERSION.encode()
    metadata[b"glow_table"] = name.encode()
    table = table.replace_schema_metadata(metadata)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StagedFile(name=name, tmp=Path(tmp), path=path)


def write_results(
    out_dir: Path, invocations: pa.Table, generations: pa.Table, aggregated: pa.Table
) -> dict[str, Path]:
    """Write invocations/generations/aggregated `.parquet` into `out_dir` (see `stage_result`);
    each file is replaced atomically, and only once all three are written.

    Returns {"invocations": path, "generations": path, "aggregated": path}.
    """
    staged: list[StagedFile] = []
    try:
        for name, table in (
            ("invocations", invocations),
            ("generations", generations),
            ("aggregated", aggregated),
        ):
            staged.append(stage_result(out_dir, name, table))
    except BaseException:
        for file in staged:
            file.discard()
        raise
    return {file.name: file.publish() for file in staged}
