"""Invocations in the store: adding a test's cells, reading them and their runs, counting."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from glow.errors import NotFound
from glow.models import Invocation, Run, Status
from glow.store import bulk
from glow.store import tables as t
from glow.store.engine import StoreEngine
from glow.store.rows import as_row, insert_new


class Invocations(StoreEngine):
    """The store's invocations and their runs, read side (part of `glow.store.Store`).

    Their lifecycle (start, finish, terminate, complete) is `glow.store.lifecycle`.
    """

    def ensure_invocations(self, invocations: Iterable[Invocation]) -> int:
        """Insert the cells that are not stored yet; existing ones (and their status) are kept."""
        wanted = {inv.invocation_id: inv for inv in invocations}
        if not wanted:
            return 0
        ids = list(wanted)
        with self.engine.begin() as conn:
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                existing.update(
                    conn.execute(
                        select(t.invocations.c.invocation_id).where(
                            t.invocations.c.invocation_id.in_(ids[i : i + 500])
                        )
                    ).scalars()
                )
            rows = [as_row(inv, t.invocations) for i, inv in wanted.items() if i not in existing]
            inserted = 0
            for i in range(0, len(rows), 500):
                # A row another caller inserted since the SELECT is skipped, not an error;
                # RETURNING counts the rows inserted (an executemany's rowcount is -1 on psycopg).
                statement = insert_new(conn, t.invocations).returning(t.invocations.c.invocation_id)
                inserted += len(conn.execute(statement, rows[i : i + 500]).all())
        return inserted

    def get_invocation(
        self, invocation_id: str, *, runs: bool = True, trace: bool = True
    ) -> Invocation:
        """The invocation, with its runs (each with its trace unless `trace` is False)."""
        with self._read() as conn:
            row = conn.execute(
                select(t.invocations).where(t.invocations.c.invocation_id == invocation_id)
            ).first()
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            inv = Invocation.model_validate(row._mapping)
            if runs:
                inv.runs = self._runs(conn, invocation_id, trace=trace)
        return inv

    def _runs(self, conn: Connection, invocation_id: str, *, trace: bool) -> list[Run]:
        cols = [c for c in t.runs.c if trace or c.name != "trace"]
        rows = conn.execute(
            select(*cols).where(t.runs.c.invocation_id == invocation_id).order_by(t.runs.c.number)
        ).all()
        return [Run.model_validate(r._mapping) for r in rows]

    def get_run(self, run_id: str) -> Run:
        """The run `run_id`; NotFound if there is none."""
        with self._read() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.run_id == run_id)).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        return Run.model_validate(row._mapping)

    def list_invocations(
        self,
        test_id: str,
        *,
        status: Status | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[Invocation]:
        """Invocations of a test in id order; `after` is a keyset cursor, stable under updates."""
        query = select(t.invocations).where(t.invocations.c.test_id == test_id)
        if status is not None:
            query = query.where(t.invocations.c.status == status)
        if model is not None:
            query = query.where(t.invocations.c.model == model)
        if after is not None:
            query = query.where(t.invocations.c.invocation_id > after)
        query = query.order_by(t.invocations.c.invocation_id)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            result = conn.execute(query)
            # Plain dicts: validating a RowMapping looks `runs` (not a column) up through
            # SQLAlchemy's missing-key path, an exception raised and caught per row.
            keys = list(result.keys())
            return [Invocation.model_validate(dict(zip(keys, row, strict=True))) for row in result]

    def invocation_columns(self, test_id: str, *, batch_rows: int = 16_384) -> Iterator[bulk.Batch]:
        """A test's invocations (lease bookkeeping left out) as column batches, for parquet.

        All of them at once, fast: see `glow.store.bulk` for how and for the batches' shape.
        """
        leases = [c.name for c in t.invocations.c if c.name.startswith("lease_")]
        return bulk.column_batches(self.engine, t.invocations, test_id, leases, batch_rows)

    def generation_columns(self, test_id: str, *, batch_rows: int = 16_384) -> Iterator[bulk.Batch]:
        """A test's generations as column batches, for parquet (see `glow.store.bulk`)."""
        return bulk.column_batches(self.engine, t.generations, test_id, (), batch_rows)

    def count_invocations(self, test_id: str) -> dict[str, int]:
        """A test's invocations counted by status."""
        with self._read() as conn:
            rows = conn.execute(
                select(t.invocations.c.status, func.count())
                .where(t.invocations.c.test_id == test_id)
                .group_by(t.invocations.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}

    def count_generations(self, test_id: str) -> int:
        """How many generations a test has stored (its cells' and its judges')."""
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(t.generations.c.test_id == test_id)
                ).scalar_one()
            )
