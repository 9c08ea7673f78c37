"""The parquet export read straight from a store (SQLite and PostgreSQL): exactly the rows, types
and values that building the tables from the pydantic models gives, awkward values included."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import event, text
from test_store import any_store  # noqa: F401 - the SQLite / PostgreSQL store fixture

from glow import results
from glow.models import (
    Generation,
    Invocation,
    Modality,
    ModelSpec,
    Rubric,
    Status,
    TestRecord,
    TestSpec,
)
from glow.results import generations_table, invocations_table, invocations_table_from_columns
from glow.results.build import build_results
from glow.store import Store

STANDARDS = ["exact", "judge"]
T0 = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
# Doubles whose shortest text needs 16-17 digits, and extremes: costs and scores must be exact.
FLOATS = [0.1 + 0.2, 1 / 3, 2 / 3, 1.8449999999999998e-05, 5e-324, 1.7976931348623157e308, 0.0]
TEXTS = [
    'quote " and \\ backslash',
    "new\nline\ttab\r",
    "unicode é 漢字 🚀",
    "comma, 'single' \"double\"",
    "",
    "\x01 control",
    '["not json"]',
]


def _record(store: Store, epochs: int = 2) -> str:
    spec = TestSpec(
        name="export",
        scenarios=[],
        models=[ModelSpec(name="m1", model="openai/x"), ModelSpec(name="m2", model="openai/y")],
        rubric="r",
        epochs=epochs,
    )
    rubric = Rubric(
        name="r", standards=[{"name": s, "kind": "exact"} for s in STANDARDS]
    )  # fmt: skip
    record = TestRecord(test_id=str(uuid.uuid4()), name="export", spec=spec, rubric=rubric)
    store.create_test(record)
    return record.test_id


def _invocation(test_id: str, i: int) -> Invocation:
    graded = i % 4 != 3
    return Invocation(
        invocation_id=f"{test_id}-inv-{i:04d}",
        test_id=test_id,
        scenario_id=f"s{i // 4}",
        category=["a", "b", "c"][i % 3],
        model=["m1", "m2"][i % 2],
        agent="direct",
        provider="openai",
        epoch=1 + i % 2,
        modalities=[Modality.text, Modality.image] if i % 5 == 0 else [Modality.text],
        status=[Status.completed, Status.failed, Status.queued, Status.terminated][i % 4],
        attempts=i % 3,
        output=None if i % 7 == 0 else TEXTS[i % len(TEXTS)],
        scores=({"exact": FLOATS[i % len(FLOATS)], "extra": 1.0} if i % 2 else {"judge": 0.5})
        if graded
        else {},
        score=FLOATS[i % len(FLOATS)] if graded else None,
        passed=[True, False, None][i % 3],
        rubric="r@1" if graded else None,
        input_tokens=i * 1_000_003,  # PostgreSQL INTEGER: 32 bits
        output_tokens=2**31 - 1 - i,
        model_cost_usd=FLOATS[(i + 1) % len(FLOATS)] if i % 6 else None,
        judge_cost_usd=FLOATS[i % len(FLOATS)] if i % 3 == 0 else None,
        cost_usd=FLOATS[(i + 2) % len(FLOATS)] if i % 6 else None,
        latency_s=FLOATS[(i + 3) % len(FLOATS)],
        error_type="RateLimitError" if i % 4 == 1 else None,
        error_message=TEXTS[(i + 1) % len(TEXTS)] if i % 4 == 1 else None,
        created_at=T0 + timedelta(microseconds=i),
        started_at=None if i % 4 == 2 else T0 + timedelta(seconds=i, microseconds=7),
        finished_at=None if i % 4 in (2, 3) else T0 + timedelta(days=i),
    )


def _generation(invocation: Invocation, n: int) -> Generation:
    judge = n % 3 == 2
    return Generation(
        generation_id=f"{invocation.invocation_id}-gen-{n}",
        test_id=invocation.test_id,
        invocation_id=invocation.invocation_id,
        run_id=f"{invocation.invocation_id}-run",
        role="judge" if judge else "model",
        model="judge-model" if judge else invocation.model,
        litellm_model="openai/judge" if judge else f"openai/{invocation.model}",
        provider="openai",
        standard="judge" if judge else None,
        input_tokens=n,
        output_tokens=3 * n,
        cost_usd=None if n % 4 == 3 else FLOATS[n % len(FLOATS)],
        latency_s=FLOATS[(n + 1) % len(FLOATS)],
        created_at=T0 + timedelta(milliseconds=n),
    )


def _fill(store: Store, test_ids: list[str], n: int) -> dict[str, tuple[list, list]]:
    """`n` invocations and ~2n generations per test, the tests' rows interleaved in the tables
    (as concurrent tests write them), so reading one test must skip the others' rows."""
    made: dict[str, tuple[list, list]] = {tid: ([], []) for tid in test_ids}
    for i in range(n):
        for test_id in test_ids:
            invocation = _invocation(test_id, i)
            generations = [_generation(invocation, g) for g in range(i % 4)]
            assert store.ensure_invocations([invocation]) == 1
            store.add_generations(generations)
            made[test_id][0].append(invocation)
            made[test_id][1].extend(generations)
    return made


def _sorted(table: pa.Table, key: str) -> pa.Table:
    return table.sort_by(key).replace_schema_metadata(None)


def test_export_from_the_store_is_exactly_the_models(
    any_store: Store,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    test_ids = [_record(any_store), _record(any_store)]
    made = _fill(any_store, test_ids, 40)
    invocations, generations = made[test_ids[0]]

    built = build_results(any_store, test_ids[0], out_dir=tmp_path)

    expected_inv = invocations_table(
        [i.model_dump(exclude={"runs"}) for i in invocations], STANDARDS
    )
    expected_gen = generations_table([g.model_dump() for g in generations])
    got_inv = pq.read_table(built.paths["invocations"])
    got_gen = pq.read_table(built.paths["generations"])
    assert got_inv.schema.remove_metadata() == expected_inv.schema
    assert got_gen.schema.remove_metadata() == expected_gen.schema
    assert _sorted(got_inv, "invocation_id").equals(_sorted(expected_inv, "invocation_id"))
    assert _sorted(got_gen, "generation_id").equals(_sorted(expected_gen, "generation_id"))
    assert built.counts == {"completed": 10, "failed": 10, "queued": 10, "terminated": 10}
    assert sum(built.counts.values()) == got_inv.num_rows == len(invocations)


def test_export_in_small_batches_reads_every_row_once(
    any_store: Store,  # noqa: F811 - the fixture
) -> None:
    test_ids = [_record(any_store), _record(any_store)]
    made = _fill(any_store, test_ids, 23)
    ids = []
    for batch in any_store.invocation_columns(test_ids[1], batch_rows=4):
        assert len(batch["invocation_id"]) <= 4
        assert set(batch["test_id"]) == {test_ids[1]}
        ids.extend(pa.array(batch["invocation_id"]).to_pylist())
    assert sorted(ids) == sorted(i.invocation_id for i in made[test_ids[1]][0])
    assert list(any_store.invocation_columns("no-such-test")) == []
    assert list(any_store.generation_columns("no-such-test")) == []


def test_sqlite_ranges_over_the_length_limit_are_split(tmp_path: Path) -> None:
    """A range whose JSON is over SQLite's length limit (huge outputs) is read in halves."""
    store = Store(f"sqlite:///{tmp_path / 'glow.db'}")
    test_id = _record(store)
    invocations = [
        _invocation(test_id, i).model_copy(update={"output": "x" * 3000}) for i in range(9)
    ]
    store.ensure_invocations(invocations)
    event.listen(
        store.engine,
        "connect",
        lambda conn, _: conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000),
    )
    store.engine.dispose()  # new connections, with the low limit
    ids = []
    for batch in store.invocation_columns(test_id):
        assert len(batch["invocation_id"]) <= 3  # 3 outputs of 3000 bytes fit in 10,000
        ids.extend(pa.array(batch["invocation_id"]).to_pylist())
    assert sorted(ids) == sorted(i.invocation_id for i in invocations)


def test_sqlite_timestamps_in_other_formats_are_still_read(tmp_path: Path) -> None:
    """Rows written by other tools may hold ISO 8601 text with an offset: read as UTC."""
    store = Store(f"sqlite:///{tmp_path / 'glow.db'}")
    test_id = _record(store)
    store.ensure_invocations([_invocation(test_id, i) for i in range(3)])
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE invocations SET started_at = '2026-01-01T02:00:00+02:00' WHERE test_id = :t"
            ),
            {"t": test_id},
        )
    table = invocations_table_from_columns(store.invocation_columns(test_id), STANDARDS)
    assert set(table.column("started_at").to_pylist()) == {datetime(2026, 1, 1, tzinfo=UTC)}


def test_a_failed_build_leaves_the_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'glow.db'}")
    test_id = _record(store)
    _fill(store, [test_id], 6)
    out = tmp_path / "results"
    first = build_results(store, test_id, out_dir=out)
    before = {name: path.read_bytes() for name, path in first.paths.items()}
    store.ensure_invocations([_invocation(test_id, 99)])

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("aggregation failed")

    monkeypatch.setattr(results, "aggregate", broken)
    with pytest.raises(RuntimeError, match="aggregation failed"):
        build_results(store, test_id, out_dir=out)
    assert {name: path.read_bytes() for name, path in first.paths.items()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in first.paths.values())
