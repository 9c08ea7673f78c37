"""Glow's parquet results as typed pandas DataFrames, for notebooks and scripts.

    from glow import analysis

    r = analysis.load("3f2a...")                  # a test id (under GLOW_RESULTS_DIR) or a folder
    r.invocations.groupby("model", observed=True)["score"].mean()
    r.aggregated.query("category == '*'")
    many = analysis.load(analysis.runs("quickstart"))  # every completed run of a test name

`load` reads ``invocations``, ``generations``, ``aggregated``, ``pairwise`` and ``regression``
parquet (see `glow.results` and `glow.comparison` for their columns) and types them:

- ``test_id``, ``model``, ``agent``, ``category``, ``status``, ``scenario_id``, ``provider``,
  ``role``, ``error_type`` and the pairwise ``model_a``/``agent_a``/``model_b``/``agent_b``
  are pandas categoricals (cheap to group by; ``observed=True`` skips empty groups);
- ``score`` and every ``score__<standard>`` column are float64 (NaN when not graded);
  `Results.standards` lists the standards;
- ``passed`` is pandas' nullable ``boolean``; timestamps are ``datetime64[..., UTC]``;
- every frame has a ``test_id`` column, so several tests concatenate into one frame.

A file a test does not have (``regression`` without an earlier run) gives an empty frame.
Imports pandas and pyarrow only: no litellm, no prefect (a notebook starts in a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from glow.errors import NotFound

SCORE_PREFIX = "score__"
TABLES = ("invocations", "generations", "aggregated", "pairwise", "regression")
CATEGORICAL = (
    "test_id",
    "base_test_id",
    "model",
    "agent",
    "category",
    "status",
    "scenario_id",
    "provider",
    "role",
    "error_type",
    "model_a",
    "agent_a",
    "model_b",
    "agent_b",
)


@dataclass
class Results:
    """One or several tests' results; each attribute is one parquet table across the tests."""

    test_ids: list[str]
    invocations: pd.DataFrame
    generations: pd.DataFrame
    aggregated: pd.DataFrame
    pairwise: pd.DataFrame
    regression: pd.DataFrame
    folders: list[Path] = field(default_factory=list)

    @property
    def standards(self) -> list[str]:
        """The rubric standards with a ``score__<standard>`` column in `invocations`."""
        return [
            c.removeprefix(SCORE_PREFIX) for c in self.invocations if c.startswith(SCORE_PREFIX)
        ]

    def overall(self) -> pd.DataFrame:
        """`aggregated`'s overall rows (category "*"), one per test x model x agent."""
        return self.aggregated[self.aggregated["category"] == "*"]


def _folder(test: str | Path, results_dir: Path | None) -> Path:
    path = Path(test)
    if path.is_dir() and (path / "invocations.parquet").is_file():
        return path
    if results_dir is None:
        from glow.settings import get_settings

        results_dir = get_settings().results_root
    folder = Path(results_dir) / str(test)
    if not (folder / "invocations.parquet").is_file():
        raise NotFound(
            f"no results for {str(test)!r}: neither a folder with invocations.parquet nor a test "
            f"id under {results_dir}; run `glow aggregate TEST_ID` to write them"
        )
    return folder


def _read(folder: Path, name: str, test_id: str) -> pd.DataFrame:
    path = folder / f"{name}.parquet"
    if not path.is_file():
        return pd.DataFrame({"test_id": pd.Series([], dtype=str)})
    table = pq.read_table(path)
    frame = table.to_pandas()
    for column in table.schema:
        if pa.types.is_boolean(column.type):
            frame[column.name] = frame[column.name].astype("boolean")
        elif column.name == "score" or column.name.startswith(SCORE_PREFIX):
            frame[column.name] = frame[column.name].astype("float64")
    if "test_id" not in frame:
        frame.insert(0, "test_id", test_id)
    return frame


def _typed(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns) > 1 or len(f)] or frames[:1]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for column in CATEGORICAL:
        if column in frame:
            frame[column] = frame[column].astype("category")
    return frame


def load(tests: str | Path | Sequence[str | Path], results_dir: Path | None = None) -> Results:
    """Load one test's results, or several concatenated (a list), as typed DataFrames.

    Each item is a test id (looked up under `results_dir`, default the ``GLOW_RESULTS_DIR``
    setting) or a folder holding the parquet files. Raises NotFound naming what is missing.
    """
    items = [tests] if isinstance(tests, str | Path) else list(tests)
    if not items:
        raise ValueError("load: no tests given")
    folders = [_folder(item, results_dir) for item in items]
    test_ids = []
    for folder in folders:
        ids = pq.read_table(folder / "invocations.parquet", columns=["test_id"]).column("test_id")
        unique = ids.unique().to_pylist()
        test_ids.append(unique[0] if len(unique) == 1 else folder.name)
    tables = {
        name: _typed([_read(f, name, tid) for f, tid in zip(folders, test_ids, strict=True)])
        for name in TABLES
    }
    return Results(test_ids=test_ids, folders=folders, **tables)


def runs(name: str, store_url: str | None = None) -> list[str]:
    """Test ids of every completed run of the test `name`, oldest first (from the store), e.g.
    for a model's score over nightly runs: ``load(runs("nightly"))``."""
    from sqlalchemy import select

    from glow.store import Store, tables

    if store_url is None:
        from glow.settings import get_settings

        store_url = get_settings().store_url
    store = Store(store_url, create=False)  # a reader: no migration
    query = (
        select(tables.tests.c.test_id)
        .where(tables.tests.c.name == name, tables.tests.c.status == "completed")
        .order_by(tables.tests.c.created_at)
    )
    with store.engine.connect() as conn:
        return list(conn.execute(query).scalars())
