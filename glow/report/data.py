"""What the report shows, computed from a test's parquet files (no drawing, no HTML here).

Everything is read from `data/results/<test_id>/`: `aggregated.parquet` (the leaderboard, the
heatmaps, cost and latency), `invocations.parquet` (failures by error type, the scenario x model
matrix, and the failure-inclusive score when the aggregated file lacks it), and, when they exist,
`pairwise.parquet` and `regression.parquet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glow.errors import GlowError

OVERALL = "*"
SCORE_PREFIX = "score__"
# A page with more cells than this gets slow to open and to filter: the matrix keeps the rows
# that matter most (disagreements, then failures) and says how many it left out.
MAX_MATRIX_CELLS = 6_000
MIN_MATRIX_ROWS = 50
# Characters of an output shown in the matrix cell, and kept for the cell's detail panel.
SNIPPET_CHARS = 90
DETAIL_CHARS = 1_500
# Error types of a failed grading (the judge), whose score is unknown rather than 0.
GRADING_ERRORS = ("judge_error", "judge_budget_exhausted")

_INVOCATION_COLUMNS = [
    "invocation_id",
    "scenario_id",
    "category",
    "model",
    "agent",
    "epoch",
    "status",
    "output",
    "score",
    "passed",
    "cost_usd",
    "latency_s",
    "error_type",
    "error_message",
]


class ReportError(GlowError):
    """A test's results cannot be reported (missing or unreadable parquet)."""


@dataclass
class ReportData:
    """A test's parquet files, loaded as pandas, plus what the report derives from them."""

    test_id: str
    directory: Path
    aggregated: pd.DataFrame
    invocations: pd.DataFrame
    pairwise: pd.DataFrame | None = None
    regression: pd.DataFrame | None = None
    standards: list[str] = field(default_factory=list)
    failure_counts: dict[str, int] = field(default_factory=dict)

    @property
    def overall(self) -> pd.DataFrame:
        return self.aggregated[self.aggregated["category"] == OVERALL]

    @property
    def categories(self) -> list[str]:
        cats = self.aggregated.loc[self.aggregated["category"] != OVERALL, "category"]
        return sorted(cats.astype(str).unique())


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in present or c.startswith(SCORE_PREFIX)]
        return pq.read_table(path, columns=columns).to_pandas()
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


def load(directory: Path, test_id: str) -> ReportData:
    """Load a test's results from `directory` (its `data/results/<test_id>/`).

    Raises ReportError naming the file when aggregated.parquet or invocations.parquet is missing
    (run `glow aggregate TEST_ID` to write them from the store)."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    for name in ("aggregated", "invocations"):
        if not (directory / f"{name}.parquet").is_file():
            raise ReportError(
                f"no {name}.parquet for test {test_id!r} in {directory}; "
                f"run `glow aggregate {test_id}` first"
            )
    aggregated = _read(directory / "aggregated.parquet")
    names = pq.read_schema(directory / "invocations.parquet").names
    wanted = _INVOCATION_COLUMNS + [n for n in names if n.startswith(SCORE_PREFIX)]
    invocations = _read(directory / "invocations.parquet", wanted)
    standards = [c[len(SCORE_PREFIX) :] for c in aggregated.columns if c.startswith(SCORE_PREFIX)]
    optional = {}
    for name in ("pairwise", "regression"):
        path = directory / f"{name}.parquet"
        optional[name] = _read(path) if path.is_file() else None
    return ReportData(
        test_id=test_id,
        directory=directory,
        aggregated=aggregated,
        invocations=invocations,
        standards=standards,
        **optional,
    )


# --------------------------------------------------------------------------- leaderboard


def failure_inclusive(invocations: pd.DataFrame) -> pd.DataFrame:
    """Per (model, agent): the mean score and pass rate counting failed invocations as 0 / not
    passed, for tests whose aggregated.parquet predates `mean_score_all` / `pass_rate_all`.

    The plain mean_score averages completed invocations only, so a model that fails half its
    cells can still top the board. Same rule as AggregatedResults' `*_all` columns: over the
    completed invocations with a score and the failed ones; a failure of grading (its score is
    unknown, not 0), a terminated (stopped, not failed) or an unfinished invocation is left out.
    Columns: model, agent, mean_score_all, pass_rate_all, n_all (invocations counted).
    """
    status = invocations["status"].astype(str)
    completed = (status == "completed") & invocations["score"].notna()
    error_type = invocations["error_type"].astype("object").astype(str)
    failed = (status == "failed") & ~error_type.isin(GRADING_ERRORS)
    counted = completed | failed
    frame = pd.DataFrame(
        {
            "model": invocations["model"].astype(str),
            "agent": invocations["agent"].astype(str),
            "score": invocations["score"].astype("float64").where(completed, 0.0).where(counted),
            "passed": invocations["passed"]
            .astype("float64")
            .where(completed, 0.0)
            .where(counted & (failed | invocations["passed"].notna())),
        }
    )
    grouped = frame.groupby(["model", "agent"], sort=True)
    out = grouped.agg(
        mean_score_all=("score", "mean"),
        pass_rate_all=("passed", "mean"),
        n_all=("score", "count"),
    )
    return out.reset_index()


def label(model: str, agent: str, agents: int) -> str:
    """How a (model, agent) is named on charts: the model alone when the test has one agent."""
    return model if agents <= 1 else f"{model} / {agent}"


def leaderboard(data: ReportData) -> pd.DataFrame:
    """Overall rows best first, with the failure-inclusive columns and a display label.

    `mean_score_all` / `pass_rate_all` come from aggregated.parquet when it has them, else they
    are computed from invocations.parquet (`failure_inclusive`)."""
    rows = data.overall.copy()
    rows["model"] = rows["model"].astype(str)
    rows["agent"] = rows["agent"].astype(str)
    if "mean_score_all" not in rows.columns or "pass_rate_all" not in rows.columns:
        rows = rows.drop(columns=["mean_score_all", "pass_rate_all"], errors="ignore")
        rows = rows.merge(failure_inclusive(data.invocations), on=["model", "agent"], how="left")
    agents = rows["agent"].nunique()
    rows["label"] = [label(m, a, agents) for m, a in zip(rows["model"], rows["agent"], strict=True)]
    rows = rows.sort_values(
        ["mean_score", "pass_rate", "model", "agent"],
        ascending=[False, False, True, True],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)
    rows["rank"] = np.arange(1, len(rows) + 1)
    rows["cost_per_pass_usd"] = rows["cost_usd"] / (rows["pass_rate"] * rows["n_completed"])
    rows.loc[~np.isfinite(rows["cost_per_pass_usd"]), "cost_per_pass_usd"] = np.nan
    return rows


def differs(a: float | None, b: float | None, tolerance: float = 5e-4) -> bool:
    """Whether the failure-inclusive score is worth showing beside the plain one."""
    if a is None or b is None or pd.isna(a) or pd.isna(b):
        return False
    return abs(float(a) - float(b)) > tolerance


def pareto_frontier(costs: list[float | None], scores: list[float | None]) -> list[int]:
    """Indices of the points on the cost-quality frontier, cheapest first.

    A point is on it when no other point is at most as costly and scores higher (or costs less
    and scores the same): every point off it has something cheaper and at least as good.
    Points with an unknown cost or score are left out (unknown is never zero)."""
    known = [
        (float(c), float(s), i)
        for i, (c, s) in enumerate(zip(costs, scores, strict=True))
        if c is not None and s is not None and not pd.isna(c) and not pd.isna(s)
    ]
    known.sort(key=lambda p: (p[0], -p[1], p[2]))
    frontier: list[int] = []
    best = -np.inf
    for _, score, index in known:
        if score > best:
            frontier.append(index)
            best = score
    return frontier


# --------------------------------------------------------------------------- heatmaps


def category_matrix(data: ReportData, labels: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (model x agent label) x category, rows in leaderboard order."""
    rows = data.aggregated[data.aggregated["category"] != OVERALL].copy()
    rows = rows.merge(labels[["model", "agent", "label"]], on=["model", "agent"])
    table = rows.pivot_table(index="label", columns="category", values="mean_score", dropna=False)
    return table.reindex(index=list(labels["label"]), columns=data.categories)


def standard_matrix(data: ReportData, labels: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (model x agent label) x rubric standard, rows in leaderboard order."""
    columns = [f"{SCORE_PREFIX}{s}" for s in data.standards]
    table = labels.set_index("label")[columns] if columns else pd.DataFrame(index=labels["label"])
    table.columns = list(data.standards)
    return table.astype("float64")


# --------------------------------------------------------------------------- failures


def failures(data: ReportData, labels: pd.DataFrame) -> pd.DataFrame:
    """Failed and terminated invocations per label x error type (counts; rows in leaderboard
    order, columns most frequent first). A terminated invocation without an error type counts
    as `terminated`, a failed one as `failed (no type)`."""
    inv = data.invocations
    status = inv["status"].astype(str)
    bad = inv[status.isin(["failed", "terminated"])]
    if bad.empty:
        return pd.DataFrame(index=list(labels["label"]))
    kind = bad["error_type"].astype("object")
    fallback = np.where(bad["status"].astype(str) == "terminated", "terminated", "failed (no type)")
    kind = kind.where(kind.notna() & (kind.astype(str) != ""), fallback)
    agents = labels["agent"].nunique()
    names = [label(m, a, agents) for m, a in zip(bad["model"], bad["agent"], strict=True)]
    frame = pd.DataFrame({"label": names, "error_type": kind.astype(str).to_numpy()})
    table = frame.groupby(["label", "error_type"]).size().unstack(fill_value=0)
    order = table.sum().sort_values(ascending=False, kind="stable").index
    return table.reindex(index=list(labels["label"]), columns=order, fill_value=0)


# --------------------------------------------------------------------------- matrix


@dataclass
class Matrix:
    """The scenario x model matrix: `rows` (dicts with scenario_id, category, epoch, flags, and
    `cells`, one per column label or None), the column labels, and how many rows exist."""

    columns: list[str]
    rows: list[dict[str, Any]]
    total_rows: int
    n_failing: int
    n_disagree: int

    @property
    def capped(self) -> bool:
        return len(self.rows) < self.total_rows


def outcome(status: str, passed: Any, score: Any) -> str:
    """A cell's outcome: pass, fail (graded, not passed), error (failed / terminated),
    pending (queued / running), or ungraded."""
    if status in ("failed", "terminated"):
        return "error"
    if status != "completed":
        return "pending"
    if passed is None or pd.isna(passed):
        return "ungraded" if score is None or pd.isna(score) else "graded"
    return "pass" if bool(passed) else "fail"


def _text(value: Any, limit: int) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _outcomes(frame: pd.DataFrame) -> np.ndarray:
    """`outcome` for every row at once."""
    status = frame["status"].astype(str).to_numpy()
    passed = frame["passed"]
    graded = passed.notna().to_numpy()
    passed_true = passed.fillna(False).astype(bool).to_numpy()
    scored = frame["score"].notna().to_numpy()
    return np.select(
        [
            np.isin(status, ["failed", "terminated"]),
            status != "completed",
            graded & passed_true,
            graded,
            scored,
        ],
        ["error", "pending", "pass", "fail", "graded"],
        default="ungraded",
    )


def _str(value: Any) -> str | None:
    """Text, or None for a null (pandas gives NaN for a null in an object column)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def scenario_matrix(data: ReportData, labels: pd.DataFrame, max_cells: int | None = None) -> Matrix:
    """Every (scenario, epoch) as a row and every model x agent as a column.

    A row is *failing* when some cell is an error or a graded fail, and models *disagree* on it
    when one passes and another does not (or, ungraded, their scores differ by 0.5 or more).
    Past `max_cells` cells, rows where models disagree come first, then failing rows, then the
    rest (each in scenario order), and the page says how many were left out. The flags are
    computed on whole columns; cells are built only for the rows kept, so a test of a million
    invocations costs a few seconds here."""
    inv = data.invocations
    agents = labels["agent"].nunique()
    columns = list(labels["label"])
    col_index = {name: i for i, name in enumerate(columns)}
    names = [label(m, a, agents) for m, a in zip(inv["model"], inv["agent"], strict=True)]
    frame = inv.assign(
        _col=pd.Series(names, index=inv.index).map(col_index),
        _outcome=_outcomes(inv),
        scenario_id=inv["scenario_id"].astype(str),
    )
    frame = frame[frame["_col"].notna()].sort_values(["scenario_id", "epoch"], kind="stable")
    frame["_row"] = frame.groupby(["scenario_id", "epoch"], sort=False).ngroup()
    outcomes = frame["_outcome"]
    per_row = pd.DataFrame(
        {
            "_row": frame["_row"],
            "failing": outcomes.isin(["error", "fail"]),
            "passing": outcomes == "pass",
            "score": frame["score"].astype("float64"),
        }
    ).groupby("_row")
    flags = per_row.agg(
        failing=("failing", "any"),
        passing=("passing", "any"),
        lo=("score", "min"),
        hi=("score", "max"),
        n_scores=("score", "count"),
    )
    flags["disagree"] = (flags["passing"] & flags["failing"]) | (
        (flags["n_scores"] > 1) & (flags["hi"] - flags["lo"] >= 0.5)
    )
    total = len(flags)
    max_cells = MAX_MATRIX_CELLS if max_cells is None else max_cells
    keep = max(MIN_MATRIX_ROWS, max_cells // max(len(columns), 1))
    chosen = flags.index.to_numpy()
    if total > keep:
        ranked = flags.sort_values(["disagree", "failing"], ascending=False, kind="stable")
        chosen = np.sort(ranked.index.to_numpy()[:keep])
    kept = frame[frame["_row"].isin(chosen)]
    standards = [c for c in frame.columns if c.startswith(SCORE_PREFIX)]

    rows: dict[int, dict[str, Any]] = {}
    for rec in kept.to_dict("records"):
        row = rows.get(rec["_row"])
        if row is None:
            category = rec["category"]
            row = rows[rec["_row"]] = {
                "scenario_id": rec["scenario_id"],
                "epoch": int(rec["epoch"]),
                "category": "" if category is None or pd.isna(category) else str(category),
                "failing": bool(flags.at[rec["_row"], "failing"]),
                "disagree": bool(flags.at[rec["_row"], "disagree"]),
                "cells": [None] * len(columns),
            }
        row["cells"][int(rec["_col"])] = {
            "invocation_id": rec["invocation_id"],
            "status": str(rec["status"]),
            "outcome": rec["_outcome"],
            "score": _float(rec["score"]),
            "output": rec["output"],
            "error_type": _str(rec["error_type"]),
            "error_message": _str(rec["error_message"]),
            "cost_usd": _float(rec["cost_usd"]),
            "latency_s": _float(rec["latency_s"]),
            "standards": {
                c[len(SCORE_PREFIX) :]: float(rec[c])
                for c in standards
                if _float(rec[c]) is not None
            },
        }
    return Matrix(
        columns,
        [rows[i] for i in sorted(rows)],
        total,
        int(flags["failing"].sum()),
        int(flags["disagree"].sum()),
    )


def snippet(value: Any) -> str:
    return _text(value, SNIPPET_CHARS)


def detail(value: Any) -> str:
    return _text(value, DETAIL_CHARS)
