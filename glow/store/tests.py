"""Tests in the store: their records, revisions, the one run-test flow each may have, spend."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import insert, select, update

from glow.errors import NotFound, TransitionError
from glow.models import TestRecord, utcnow
from glow.store import tables as t
from glow.store.engine import StoreEngine
from glow.store.rows import as_row

# What defines a test: a change to any of these bumps its revision (see `Tests.update_test`).
DEFINITION = frozenset({"spec", "rubric", "skipped", "spec_path"})


class StaleTest(TransitionError):
    """A compare-and-set write of a test found another revision than the one it read."""


@functools.cache
def _test_field(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(TestRecord.model_fields[name].annotation)


def _test_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields of a TestRecord as column values, each validated by the field's own type."""
    fixed = {"test_id", "created_at", "updated_at", "revision"}
    unknown = sorted(set(fields) - set(TestRecord.model_fields) | (set(fields) & fixed))
    if unknown:
        raise ValueError(f"not changeable fields of a test: {', '.join(unknown)}")
    json_cols = t.json_fields(t.tests)
    values = {}
    for name, value in fields.items():
        adapter = _test_field(name)
        valid = adapter.validate_python(value)
        values[name] = adapter.dump_python(valid, mode="json" if name in json_cols else "python")
    return values


class Tests(StoreEngine):
    """The store's test records (part of `glow.store.Store`)."""

    def create_test(self, record: TestRecord) -> None:
        """Store a new test (its id must be new)."""
        with self.engine.begin() as conn:
            conn.execute(insert(t.tests).values(as_row(record, t.tests)))

    def get_test(self, test_id: str) -> TestRecord:
        """The test `test_id`; NotFound if there is none."""
        with self._read() as conn:
            row = conn.execute(select(t.tests).where(t.tests.c.test_id == test_id)).first()
        if row is None:
            raise NotFound(f"test {test_id!r} not found; `glow tests list` shows the known tests")
        return TestRecord.model_validate(row._mapping)

    def update_test(
        self, test_id: str, *, expect_revision: int | None = None, **fields: Any
    ) -> int:
        """Change the given fields of a test, and only those; return its revision after.

        One UPDATE of the named columns: a change another process makes to other fields at the
        same time is kept. A change to what defines the test (`DEFINITION`) bumps its
        `revision`; with `expect_revision` the write happens only if the revision is still that
        one (compare-and-set), else `StaleTest` (read the test again and redo the change).
        """
        values = _test_values(fields)
        values["updated_at"] = utcnow()
        tc = t.tests.c
        statement = update(t.tests).where(tc.test_id == test_id)
        if expect_revision is not None:
            statement = statement.where(tc.revision == expect_revision)
        if fields.keys() & DEFINITION:
            values["revision"] = tc.revision + 1
        with self.engine.begin() as conn:
            changed = conn.execute(statement.values(values)).rowcount
            revision = conn.execute(select(tc.revision).where(tc.test_id == test_id)).scalar()
        if revision is None:
            raise NotFound(f"test {test_id!r} not found; `glow tests list` shows the known tests")
        if not changed:
            raise StaleTest(
                f"test {test_id} was changed meanwhile (revision {revision}, read at "
                f"{expect_revision}); read it again and retry"
            )
        return int(revision)

    def test_revision(self, test_id: str) -> int:
        """The test's `revision` (one small read, for caches keyed by it)."""
        with self._read() as conn:
            revision = conn.execute(
                select(t.tests.c.revision).where(t.tests.c.test_id == test_id)
            ).scalar()
        if revision is None:
            raise NotFound(f"test {test_id!r} not found; `glow tests list` shows the known tests")
        return int(revision)

    def begin_test_run(self, test_id: str) -> TestRecord:
        """Mark a test running for one run-test flow; a test already running is refused.

        One conditional UPDATE: of several callers at once, exactly one gets the test; the
        others get a TransitionError naming the flow run that holds it.
        """
        tc = t.tests.c
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(t.tests)
                .where(tc.test_id == test_id, tc.status != "running")
                .values(status="running", updated_at=utcnow())
            ).rowcount
            row = conn.execute(select(t.tests).where(tc.test_id == test_id)).first()
        if row is None:
            raise NotFound(f"test {test_id!r} not found; `glow tests list` shows the known tests")
        record = TestRecord.model_validate(row._mapping)
        if not changed:
            raise TransitionError(
                f"test {test_id} is running (flow run {record.flow_run_id}); wait for it to "
                "end, or cancel it"
            )
        return record

    def end_test_run(self, test_id: str, status: str) -> bool:
        """Set a running test's status (a run that could not start); False if it is not
        running any more (another process moved it on, which is kept)."""
        tc = t.tests.c
        values = _test_values({"status": status})
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(t.tests)
                    .where(tc.test_id == test_id, tc.status == "running")
                    .values(**values, updated_at=utcnow())
                ).rowcount
            )

    def list_tests(self, limit: int = 100) -> list[TestRecord]:
        """The latest `limit` tests, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(t.tests).order_by(t.tests.c.created_at.desc()).limit(limit)
            ).all()
        return [TestRecord.model_validate(r._mapping) for r in rows]

    def add_spend(self, test_id: str, usd: float) -> float:
        """Add to a test's spend and return the new total (atomic across threads)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.tests)
                .where(t.tests.c.test_id == test_id)
                .values(budget_spent_usd=t.tests.c.budget_spent_usd + usd)
            )
            return float(
                conn.execute(
                    select(t.tests.c.budget_spent_usd).where(t.tests.c.test_id == test_id)
                ).scalar_one()
            )

    def test_for_flow_run(self, flow_run_id: str) -> str | None:
        """The id of the test a run-test flow run is running, if any."""
        with self._read() as conn:
            return conn.execute(
                select(t.tests.c.test_id).where(t.tests.c.flow_run_id == flow_run_id)
            ).scalar()
