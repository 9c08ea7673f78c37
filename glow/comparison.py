"""Paired comparisons built from invocations: models against each other, a run against the last.

- `pairwise_table`: every two model x agent combinations of one test, compared on the
  scenarios and epochs both answered (``pairwise.parquet``).
- `regression_table`: a test against an earlier run of the same test name, per model x agent,
  on the cells both runs share (``regression.parquet``, `glow compare`).
- `previous_completed_test`: which earlier run a test is compared with.

Both tables pair cells by (scenario, epoch) and use `glow.stats.paired_difference`: mean paired
difference, clustered standard error, t-based 95% CI and p-value. A pair counts when both of
its cells are ``completed`` with a score; failed, terminated or unfinished cells are left out
of the score statistics (regression counts them in ``newly_failing``/``newly_passing``).
Errors are clustered by scenario (its epochs are one cluster), or by the value of the test's
``cluster_by`` scenario metadata key (a scenario without that key is a cluster of its own).

Only pandas/pyarrow/numpy and the store's SQL layer: no litellm, no prefect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from glow import stats
from glow.models import FINAL_STATUSES, Status, TestRecord
from glow.results.schema import OVERALL

if TYPE_CHECKING:
    from glow.store import Store


PAIRWISE_SCHEMA = pa.schema(
    [
        ("model_a", pa.string()),
        ("agent_a", pa.string()),
        ("model_b", pa.string()),
        ("agent_b", pa.string()),
        ("category", pa.string()),
        ("n_pairs", pa.int64()),
        ("n_clusters", pa.int64()),
        ("mean_a", pa.float64()),
        ("mean_b", pa.float64()),
        ("mean_diff", pa.float64()),
        ("stderr", pa.float64()),
        ("ci95_low", pa.float64()),
        ("ci95_high", pa.float64()),
        ("p_value", pa.float64()),
        ("method", pa.string()),
        ("wins", pa.int64()),
        ("ties", pa.int64()),
        ("losses", pa.int64()),
    ]
)

REGRESSION_SCHEMA = pa.schema(
    [
        ("test_id", pa.string()),
        ("base_test_id", pa.string()),
        ("model", pa.string()),
        ("agent", pa.string()),
        ("category", pa.string()),
        ("n_pairs", pa.int64()),
        ("mean_base", pa.float64()),
        ("mean_new", pa.float64()),
        ("delta", pa.float64()),
        ("stderr", pa.float64()),
        ("ci95_low", pa.float64()),
        ("ci95_high", pa.float64()),
        ("p_value", pa.float64()),
        ("newly_failing", pa.int64()),
        ("newly_passing", pa.int64()),
        ("cost_base_usd", pa.float64()),
        ("cost_new_usd", pa.float64()),
        ("cost_delta_usd", pa.float64()),
    ]
)

_CELL = ["scenario_id", "model", "agent", "epoch"]
_NEEDED = [*_CELL, "category", "status", "score", "passed", "cost_usd"]


def _frame(invocations: pa.Table) -> pd.DataFrame:
    """The columns the comparisons need, strings as categoricals (a million rows group and join
    on integer codes), with the score of non-completed cells as NaN."""
    frame = invocations.select(_NEEDED).to_pandas(strings_to_categorical=True)
    completed = (frame["status"] == Status.completed.value).to_numpy()
    frame["score"] = frame["score"].astype("float64").where(completed)
    frame["passing"] = completed & frame["passed"].fillna(False).astype(bool).to_numpy()
    return frame


def _codes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One dense int64 code per distinct combination of `columns` (categoricals or ints)."""
    combined = np.zeros(len(frame), dtype=np.int64)
    for column in columns:
        codes, uniques = pd.factorize(frame[column])
        combined = combined * (len(uniques) + 1) + codes + 1
    return np.unique(combined, return_inverse=True)[1].reshape(-1)


def scenario_clusters(record: TestRecord) -> dict[str, str] | None:
    """scenario_id -> value of the test's `cluster_by` metadata key (None without `cluster_by`).

    Scenarios come from the stored spec (inline, or its scenarios file resolved beside the test
    file as when it ran); a scenario lacking the key is left out (it is a cluster of its own).
    """
    key = record.spec.cluster_by
    if not key:
        return None
    from glow.spec import load_scenarios

    if isinstance(record.spec.scenarios, str):
        base_dir = Path(record.spec_path).parent if record.spec_path else Path.cwd()
        scenarios = load_scenarios(record.spec.scenarios, base_dir)
    else:
        scenarios = record.spec.scenarios
    return {s.id: str(s.metadata[key]) for s in scenarios if key in s.metadata}


def _categories(frame: pd.DataFrame) -> list[str]:
    present = pd.unique(frame["category"].dropna())
    return [OVERALL, *sorted(map(str, present))]


def pairwise_table(invocations: pa.Table, clusters: Mapping[str, str] | None = None) -> pa.Table:
    """``pairwise.parquet``: every two model x agent combinations of the test, overall
    (category "*") and per category, compared on the (scenario, epoch) cells both completed.

    Each unordered pair appears once, a before b in (model, agent) order; ``mean_diff`` is
    a - b (flip the signs for b - a). See `glow.stats.paired_difference` for the statistics.
    """
    frame = _frame(invocations)
    cell = _codes(frame, ["scenario_id", "epoch"])
    combo = _codes(frame, ["model", "agent"])
    n_cells = int(cell.max()) + 1 if len(cell) else 0
    n_combos = int(combo.max()) + 1 if len(combo) else 0
    combo_first = np.unique(combo, return_index=True)[1]
    names = [(str(frame["model"].iat[i]), str(frame["agent"].iat[i])) for i in combo_first]
    # scores[cell, combo]: a cell is one invocation; rows made by hand may repeat one (averaged).
    flat = cell * n_combos + combo
    scored = ~np.isnan(frame["score"].to_numpy())
    size = n_cells * n_combos
    sums = np.bincount(flat[scored], frame["score"].to_numpy()[scored], minlength=size)
    counts = np.bincount(flat[scored], minlength=size)
    with np.errstate(invalid="ignore"):
        scores = (sums / counts).reshape(n_cells, n_combos)
    cell_first = np.unique(cell, return_index=True)[1]
    row_category, category_names = pd.factorize(frame["category"])
    cell_category = row_category[cell_first]
    cell_cluster = stats.cluster_labels(frame["scenario_id"].iloc[cell_first], clusters)
    order = sorted(range(n_combos), key=lambda c: names[c])

    rows: list[dict[str, Any]] = []
    for category in _categories(frame):
        if category == OVERALL:
            in_category, ran = np.ones(n_cells, dtype=bool), set(range(n_combos))
        else:
            code = list(map(str, category_names)).index(category)
            in_category = cell_category == code
            ran = set(np.unique(combo[row_category == code]).tolist())
        codes = cell_cluster[in_category]
        for a, b in combinations(order, 2):
            if a not in ran and b not in ran:
                continue  # neither ran in this category
            result = stats.paired_difference(scores[in_category, a], scores[in_category, b], codes)
            rows.append(
                {
                    "model_a": names[a][0],
                    "agent_a": names[a][1],
                    "model_b": names[b][0],
                    "agent_b": names[b][1],
                    "category": category,
                    **result.as_dict(),
                }
            )
    return pa.Table.from_pylist(rows, schema=PAIRWISE_SCHEMA)


def _known_cost(costs: pd.Series, statuses: pd.Series) -> float | None:
    """Sum of the finished cells' costs; unknown (None) when one of them is unknown."""
    finished = statuses.isin([s.value for s in FINAL_STATUSES])
    spent = costs[finished]
    if spent.isna().any():
        return None
    return float(spent.sum())


def regression_table(
    new: pa.Table,
    base: pa.Table,
    *,
    test_id: str,
    base_test_id: str,
    clusters: Mapping[str, str] | None = None,
) -> pa.Table:
    """``regression.parquet``: run `new` against the earlier run `base` of the same test, per
    model x agent, overall (category "*", the category as in `new`) and per category.

    Cells are matched by (scenario, model, agent, epoch); only cells both runs have count.
    ``delta`` = new - base over the pairs both completed with a score, with the clustered
    paired CI and p-value of `glow.stats.paired_difference`. A cell passes when it is completed
    and passed; ``newly_failing`` passed in base and not in new, ``newly_passing`` the reverse.
    Costs are the shared cells' ``cost_usd`` summed over finished cells (unknown if any is).
    """
    new_frame, base_frame = _frame(new), _frame(base)
    # Both runs' cell keys on one set of codes, then a join on one int64 key.
    for column in _CELL[:3]:
        categories = new_frame[column].cat.categories.union(base_frame[column].cat.categories)
        new_frame[column] = new_frame[column].cat.set_categories(categories)
        base_frame[column] = base_frame[column].cat.set_categories(categories)
    both = pd.concat([new_frame[_CELL], base_frame[_CELL]], ignore_index=True)
    key = _codes(both, _CELL)
    new_frame["key"], base_frame["key"] = key[: len(new_frame)], key[len(new_frame) :]
    # A cell is one invocation; if hand-made rows repeat one, the last row stands for it.
    new_cells = new_frame.drop_duplicates("key", keep="last")
    base_cells = base_frame.drop_duplicates("key", keep="last").drop(columns=_CELL)
    shared = new_cells.merge(base_cells, on="key", suffixes=("_new", "_base"))
    shared["category"] = shared["category_new"].astype(str)
    rows: list[dict[str, Any]] = []
    for category in _categories(shared):
        part = shared if category == OVERALL else shared[shared["category"] == category]
        for (model, agent), group in part.groupby(["model", "agent"], sort=True, observed=True):
            codes = stats.cluster_labels(group["scenario_id"], clusters)
            paired = stats.paired_difference(group["score_new"], group["score_base"], codes)
            cost_base = _known_cost(group["cost_usd_base"], group["status_base"])
            cost_new = _known_cost(group["cost_usd_new"], group["status_new"])
            rows.append(
                {
                    "test_id": test_id,
                    "base_test_id": base_test_id,
                    "model": str(model),
                    "agent": str(agent),
                    "category": category,
                    "n_pairs": paired.n_pairs,
                    "mean_base": paired.mean_b,
                    "mean_new": paired.mean_a,
                    "delta": paired.mean_diff,
                    "stderr": paired.stderr,
                    "ci95_low": paired.ci95_low,
                    "ci95_high": paired.ci95_high,
                    "p_value": paired.p_value,
                    "newly_failing": int((group["passing_base"] & ~group["passing_new"]).sum()),
                    "newly_passing": int((~group["passing_base"] & group["passing_new"]).sum()),
                    "cost_base_usd": cost_base,
                    "cost_new_usd": cost_new,
                    "cost_delta_usd": (
                        None if cost_base is None or cost_new is None else cost_new - cost_base
                    ),
                }
            )
    return pa.Table.from_pylist(rows, schema=REGRESSION_SCHEMA)


def previous_completed_test(store: Store, test_id: str) -> str | None:
    """The newest completed test with the same name as `test_id`, created before it; None if
    there is none. (A test being aggregated is still `running`, so it never finds itself.)"""
    from sqlalchemy import select

    from glow.store import tables

    record = store.get_test(test_id)
    tests = tables.tests
    query = (
        select(tests.c.test_id)
        .where(
            tests.c.name == record.name,
            tests.c.status == "completed",
            tests.c.test_id != test_id,
            tests.c.created_at < record.created_at,
        )
        .order_by(tests.c.created_at.desc())
        .limit(1)
    )
    with store.engine.connect() as conn:
        return conn.execute(query).scalar()


def regression_markdown(table: pa.Table) -> str:
    """The regression as markdown for the flow run's `regression` artifact: overall rows
    first, then the per-category rows of every model x agent with newly failing cells."""
    rows = table.to_pylist()
    if not rows:
        return "# Regression\n\nNo cells in common with the previous run."
    first = rows[0]
    lines = [
        f"# Regression of `{first['test_id']}` against `{first['base_test_id']}`",
        "",
        "Score delta = new - base over the scenarios and epochs both runs completed; paired "
        "95% CI and p-value (paired t-test, clustered standard errors).",
        "",
        "| model | agent | category | pairs | base | new | delta | 95% CI | p | newly failing "
        "| newly passing | cost delta |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    overall = [r for r in rows if r["category"] == OVERALL]
    worse = {(r["model"], r["agent"]) for r in rows if r["newly_failing"]}
    detail = [r for r in rows if r["category"] != OVERALL and (r["model"], r["agent"]) in worse]
    for row in [*overall, *detail]:
        lines.append(
            f"| {row['model']} | {row['agent']} | {row['category']} | {row['n_pairs']} "
            f"| {_fmt(row['mean_base'])} | {_fmt(row['mean_new'])} | {_fmt(row['delta'], '+.3f')} "
            f"| [{_fmt(row['ci95_low'], '+.3f')}, {_fmt(row['ci95_high'], '+.3f')}] "
            f"| {_fmt(row['p_value'])} | {row['newly_failing']} | {row['newly_passing']} "
            f"| {_money(row['cost_delta_usd'])} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:+.6f} USD"


def compare_tests(
    store: Store, test_id: str, base_test_id: str | None, results_root: Path
) -> pa.Table:
    """`glow compare`: the regression table of `test_id` against `base_test_id` (default: the
    previous completed run of the same name), from both tests' ``invocations.parquet`` under
    `results_root`. Raises GlowError naming what is missing and what to run."""
    import pyarrow.parquet as pq

    from glow.errors import GlowError

    record = store.get_test(test_id)
    if base_test_id is None:
        base_test_id = previous_completed_test(store, test_id)
        if base_test_id is None:
            raise GlowError(
                f"test {test_id!r} ({record.name!r}) has no earlier completed run of the same "
                "name to compare with; pass the other test id: glow compare TEST_ID BASE_TEST_ID"
            )
    else:
        store.get_test(base_test_id)  # NotFound names the id
    tables = []
    for tid in (test_id, base_test_id):
        path = results_root / tid / "invocations.parquet"
        if not path.is_file():
            raise GlowError(f"no results for test {tid!r} at {path}; run `glow aggregate {tid}`")
        tables.append(pq.read_table(path, columns=_NEEDED))
    return regression_table(
        tables[0],
        tables[1],
        test_id=test_id,
        base_test_id=base_test_id,
        clusters=scenario_clusters(record),
    )
