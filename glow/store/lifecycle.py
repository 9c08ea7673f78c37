"""The ledger of record: tests, invocations, runs (with traces), scores and generations.

Prefect shows what happened; the store is what Glow trusts (Prefect's own record of task runs
drops events under load). Every status change goes through a guarded UPDATE, so the lifecycle
holds even with several runners, the API and the CLI writing at once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import (
    Engine,
    Select,
    Update,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from glow.errors import NotFound, TransitionError
from glow.models import (
    FINAL_STATUSES,
    Draft,
    Generation,
    Invocation,
    Run,
    StandardScore,
    Status,
    TestRecord,
    utcnow,
)
from glow.store import bulk
from glow.store import tables as t
from glow.store.owner import owner_is_dead

# Which statuses each operation may start from (the seed's lifecycle).
RUNNABLE = frozenset({Status.queued, Status.failed})
RERUNNABLE = frozenset({Status.queued, Status.failed, Status.completed, Status.terminated})
TERMINABLE = frozenset({Status.queued, Status.running})
COMPLETABLE = frozenset({Status.queued, Status.running, Status.failed})


# What defines a test: a change to any of these bumps its revision (see `Store.update_test`).
DEFINITION = frozenset({"spec", "rubric", "skipped", "spec_path"})
# How often a conditional write that lost a race re-reads and decides again before giving up.
_RACE_ROUNDS = 50


class StaleTest(TransitionError):
    """A compare-and-set write of a test found another revision than the one it read."""


class LeaseHeld(TransitionError):
    """The invocation is running under another live runner's lease."""

    def __init__(self, message: str, expires_at: datetime) -> None:
        super().__init__(message)
        self.expires_at = expires_at


@functools.cache
def _column_names(table: t.Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns)


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


def _row(obj: BaseModel, table: t.Table, **extra: Any) -> dict[str, Any]:
    """A model as a row: JSON columns get JSON-safe values, the rest stay typed."""
    data = obj.model_dump(include=_column_names(table))
    json_cols = t.json_fields(table) & data.keys()
    if json_cols:
        data.update(obj.model_dump(mode="json", include=json_cols))
    data.update(extra)
    return data


# The statements of a cell's two writes (`start_run`, `finish_run`) are built once and take their
# values as execute() parameters: building a statement and its cache key took ~5x as long as
# running it (an UPDATE: ~200 vs ~40 us), and every cell makes eight. An UPDATE given no
# `.values()` sets the columns named by the parameters (and ignores other names: `_update_by`'s
# callers with caller-given fields check them with `_check_columns`).
_KEY = "_key"


@functools.cache
def _select_by(table: t.Table, key: str, columns: tuple[str, ...]) -> Select[Any]:
    """SELECT `columns` FROM `table` WHERE `key` = :_key."""
    return select(*(table.c[name] for name in columns)).where(table.c[key] == bindparam(_KEY))


@functools.cache
def _update_by(table: t.Table, key: str) -> Update:
    """UPDATE `table` SET <the parameters' columns> WHERE `key` = :_key."""
    return update(table).where(table.c[key] == bindparam(_KEY))


def _insert_new(conn: Connection, table: t.Table) -> Any:
    """INSERT that skips rows whose primary key exists (SQLite and PostgreSQL alike)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # pragma: no cover - the store runs on SQLite and PostgreSQL
        return insert(table)
    return dialect_insert(table).on_conflict_do_nothing()


@functools.cache
def _start_update(takeover: str) -> Update:
    """`start_run`'s write: UPDATE invocations SET <the parameters' columns> WHERE the row is
    still as read (invocation_id = :_key, status = :_status, attempts = :_attempts) and, for a
    takeover, its owner is still the dead one (`dead`) or its lease still expired (`expired`)."""
    inv_c = t.invocations.c
    statement = update(t.invocations).where(
        inv_c.invocation_id == bindparam(_KEY),
        inv_c.status == bindparam("_status"),
        inv_c.attempts == bindparam("_attempts"),
    )
    if takeover == "dead":
        statement = statement.where(inv_c.lease_owner == bindparam("_owner"))
    elif takeover == "expired":  # and not renewed since it was read
        statement = statement.where(
            or_(
                inv_c.lease_expires_at.is_(None),
                inv_c.lease_expires_at < bindparam("_now", type_=t.UTCDateTime()),
            )
        )
    return statement


@functools.cache
def _finish_update() -> Update:
    """UPDATE invocations SET <the parameters' columns> WHERE invocation_id = :_key AND status =
    :_running AND attempts = :_number: `finish_run`'s write, a no-op once the run is not live."""
    inv_c = t.invocations.c
    return update(t.invocations).where(
        inv_c.invocation_id == bindparam(_KEY),
        inv_c.status == bindparam("_running"),
        inv_c.attempts == bindparam("_number"),
    )


def _check_columns(table: t.Table, values: dict[str, Any]) -> None:
    """Refuse names that are not columns, which an UPDATE built by `_update_by` would drop."""
    unknown = values.keys() - _column_names(table)
    if unknown:
        raise ValueError(f"not columns of {table.name}: {', '.join(sorted(unknown))}")


# The execution option marking a store connection that only reads (see `_sqlite_pragmas`).
_READ_ONLY = "glow_read_only"


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        # pysqlite's own transaction handling is off so writers can BEGIN IMMEDIATE: taking the
        # write lock up front avoids the "database is locked" upgrade deadlock between threads.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; the store's reads (`Store._read`) begin
        # deferred and read a WAL snapshot, so they never wait behind a writer.
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Sized for the API's worker threads (anyio's default 40) and the runner's concurrency:
        # SQLAlchemy's default 5 + 10 made threads queue for a connection (or time out).
        pool = {"pool_size": 40, "max_overflow": 88, "pool_timeout": 120}
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            **(pool if path and path != ":memory:" else {}),
        )
        _sqlite_pragmas(engine)
        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (idempotent, safe on every start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


# The step kinds of `Store._json_page_plan` (the API's list pages).
_PAGE_OBJECT, _PAGE_FLOAT, _PAGE_TIMESTAMP, _PAGE_CONSTANT = range(4)


class Store:
    """All reads and writes of Glow's records. Thread-safe; one per process is enough."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if create:
            migrate(self.engine)

    @classmethod
    def from_settings(cls) -> Store:
        from glow.settings import get_settings

        return cls(get_settings().store_url)

    def _read(self) -> Connection:
        """A connection for reads only: on SQLite its transaction does not take the write lock."""
        return self.engine.connect().execution_options(**{_READ_ONLY: True})

    # ------------------------------------------------------------------ tests

    def create_test(self, record: TestRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(t.tests).values(_row(record, t.tests)))

    def get_test(self, test_id: str) -> TestRecord:
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

    # ------------------------------------------------------------------ invocations

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
            rows = [_row(inv, t.invocations) for i, inv in wanted.items() if i not in existing]
            inserted = 0
            for i in range(0, len(rows), 500):
                # A row another caller inserted since the SELECT is skipped, not an error;
                # RETURNING counts the rows inserted (an executemany's rowcount is -1 on psycopg).
                statement = _insert_new(conn, t.invocations).returning(
                    t.invocations.c.invocation_id
                )
                inserted += len(conn.execute(statement, rows[i : i + 500]).all())
        return inserted

    def get_invocation(
        self, invocation_id: str, *, runs: bool = True, trace: bool = True
    ) -> Invocation:
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
            # SQLAlchemy's missing-key path, an exception per row; dicts take half the time.
            keys = list(result.keys())
            return [Invocation.model_validate(dict(zip(keys, row, strict=True))) for row in result]

    def list_invocations_json(
        self,
        test_id: str,
        *,
        status: Status | str | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[tuple[str, str]]:
        """`list_invocations` as (invocation_id, JSON text) pairs, for the API's list pages.

        Each text is the JSON of `Invocation.model_dump(mode="json")` (the row unhydrated, so
        `runs` is `[]`): the same keys in the same order and the same values. Why: validating a
        page of rows into pydantic models and dumping them back was most of a page's CPU, and
        16 clients of `glow serve` queue behind it. On SQLite the database writes most of each
        row's JSON (`_json_page_plan`); any other database, or a page holding a value the fast
        path cannot render exactly as pydantic would, takes the pydantic path.
        """
        if self.engine.dialect.name == "sqlite":
            page = self._json_page_sqlite(test_id, status, model, after, limit)
            if page is not None:
                return page
        import json

        return [
            # What the API's JSONResponse renders: compact, non-ASCII kept, NaN refused.
            (
                inv.invocation_id,
                json.dumps(
                    inv.model_dump(mode="json"),
                    ensure_ascii=False,
                    allow_nan=False,
                    separators=(",", ":"),
                ),
            )
            for inv in self.list_invocations(
                test_id, status=status, model=model, after=after, limit=limit
            )
        ]

    def _json_page_sqlite(
        self,
        test_id: str,
        status: Status | str | None,
        model: str | None,
        after: str | None,
        limit: int | None,
    ) -> list[tuple[str, str]] | None:
        """The SQLite path of `list_invocations_json`; None if a row needs the pydantic path."""
        import sqlite3

        select_list, steps = self._json_page_plan()
        where, params = ["test_id = ?"], [test_id]
        if status is not None:
            where.append("status = ?")
            params.append(Status(status).value)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if after is not None:
            where.append("invocation_id > ?")
            params.append(after)
        sql = (
            f"SELECT {select_list} FROM {t.invocations.name} "
            f"WHERE {' AND '.join(where)} ORDER BY invocation_id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        # The driver's cursor, not SQLAlchemy's Result: the rows are plain text and numbers.
        connection = self.engine.raw_connection()
        if not connection.info.get("page_cache"):
            # Random pages of a large test touch rows all over the table: a 64 MiB page cache
            # (SQLite's default is 2 MiB) keeps them in memory instead of a pread each, ~0.2 ms
            # of system time a page. Set once per pooled connection; it only grows when used.
            connection.driver_connection.execute("PRAGMA cache_size = -65536")
            connection.info["page_cache"] = True
        try:
            rows = connection.driver_connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # json() refused a stored text: pydantic decides
            return None
        except UnicodeEncodeError:  # a filter with a lone surrogate: no stored text has one
            return []
        finally:
            connection.close()
        if not rows:
            return []
        # Column by column (a third faster than row by row): each step renders one JSON member
        # of every row, then each row's members are joined.
        columns = list(zip(*rows, strict=True))
        if any(columns[1]):  # the `odd` flag
            return None
        members: list[list[str]] = []
        for kind, index, prefix in steps:
            if kind == _PAGE_OBJECT:  # '{"a":1,"b":"x"}' -> '"a":1,"b":"x"'
                members.append([text[1:-1] for text in columns[index]])
            elif kind == _PAGE_CONSTANT:  # a field that is not stored, with its default
                members.append([prefix] * len(rows))
            else:
                render = self._json_float if kind == _PAGE_FLOAT else self._json_timestamp
                rendered = render(prefix, columns[index])
                if rendered is None:
                    return None
                members.append(rendered)
        texts = ["{" + ",".join(row) + "}" for row in zip(*members, strict=True)]
        return list(zip(columns[0], texts, strict=True))

    _json_page: tuple[str, list[tuple[int, int, str]]] | None = None

    @classmethod
    def _json_page_plan(cls) -> tuple[str, list[tuple[int, int, str]]]:
        """The SELECT list rendering an invocation row as its API JSON, and the steps to join it.

        Derived from `Invocation`'s fields (their order is the JSON's key order) and the
        columns' types, so a new column is rendered without touching this. SQLite's
        `json_object` writes each run of text, integer, boolean and JSON columns in one call
        (it keeps the number tokens of a JSON text verbatim; a `||` chain of `json_quote`s cost
        twice as much). Floats come back as values for Python to write: SQLite prints 15
        significant digits, which does not round-trip, where json.dumps writes `repr`;
        timestamps too, reshaped faster in Python than in SQL. Column 1 is an `odd` flag, true
        when SQL cannot render a value exactly as pydantic would (a JSON text holding NaN or
        Infinity, a boolean other than 0/1), which sends the page to the pydantic path.
        Steps: (kind, column index, key prefix or constant text).
        """
        if cls._json_page is not None:
            return cls._json_page
        import json

        from pydantic_core import to_jsonable_python
        from sqlalchemy import JSON, Boolean, Float

        def flush() -> None:
            if pairs:
                select_list.append("json_object(" + ", ".join(pairs) + ")")
                steps.append((_PAGE_OBJECT, len(select_list), ""))  # its index once odd is in
                pairs.clear()

        columns = {c.name: c for c in t.invocations.c}
        select_list, odd, pairs = ["invocation_id"], [], []
        steps: list[tuple[int, int, str]] = []
        for name, field in Invocation.model_fields.items():
            column = columns.get(name)
            q = f'"{name}"'
            key = "'" + name.replace("'", "''") + "'"
            if column is None:  # not stored (runs): its default
                flush()
                default = to_jsonable_python(field.get_default(call_default_factory=True))
                steps.append((_PAGE_CONSTANT, 0, f"{json.dumps(name)}:{json.dumps(default)}"))
            elif isinstance(column.type, Float | t.UTCDateTime):
                flush()
                select_list.append(q)
                kind = _PAGE_FLOAT if isinstance(column.type, Float) else _PAGE_TIMESTAMP
                steps.append((kind, len(select_list), f"{json.dumps(name)}:"))
            elif isinstance(column.type, JSON):
                pairs += [key, f"json({q})"]
                odd.append(f"{q} IS NULL OR instr({q}, 'NaN') OR instr({q}, 'Infinity')")
            elif isinstance(column.type, Boolean):
                pairs += [key, f"json(CASE {q} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END)"]
                odd.append(f"{q} IS NOT NULL AND {q} NOT IN (0, 1)")
            else:  # text and integers (column affinity keeps each in its type)
                pairs += [key, q]
        flush()
        select_list.insert(1, " OR ".join(f"({o})" for o in odd) or "0")
        cls._json_page = ", ".join(select_list), steps
        return cls._json_page

    @staticmethod
    def _json_float(prefix: str, values: Iterable[Any]) -> list[str] | None:
        """`prefix` + each float as json.dumps writes it (`repr`); None if one is not a finite
        float (NaN and inf fail the API's JSON render: the pydantic path reports that)."""
        out = []
        for value in values:
            if value is None:
                out.append(prefix + "null")
            elif value.__class__ is float and value - value == 0.0:
                out.append(prefix + repr(value))
            else:
                return None
        return out

    @staticmethod
    def _json_timestamp(prefix: str, values: Iterable[Any]) -> list[str] | None:
        """`prefix` + each timestamp as pydantic writes it, 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z' (no
        fraction when it is zero), from SQLAlchemy's SQLite text of a UTC timestamp,
        'YYYY-MM-DD HH:MM:SS.ffffff'; None if one is other text (the pydantic path parses it)."""
        out = []
        for value in values:
            if value is None:
                out.append(prefix + "null")
            elif value.__class__ is str and len(value) == 26 and value[10:20:9] == " .":
                clock = value[11:19] if value.endswith(".000000") else value[11:]
                out.append(f'{prefix}"{value[:10]}T{clock}Z"')
            else:
                return None
        return out

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
        with self._read() as conn:
            rows = conn.execute(
                select(t.invocations.c.status, func.count())
                .where(t.invocations.c.test_id == test_id)
                .group_by(t.invocations.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}

    def count_generations(self, test_id: str) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(t.generations.c.test_id == test_id)
                ).scalar_one()
            )

    # ------------------------------------------------------------------ lifecycle

    def start_run(
        self,
        invocation_id: str,
        *,
        allowed: frozenset[Status] = RUNNABLE,
        owner: str | None = None,
        lease_s: float = 3600.0,
    ) -> Run:
        """Move an invocation to running and open a new run for it, atomically.

        A `running` invocation whose lease has expired (its runner died) may be taken over.
        """
        owner = owner or uuid.uuid4().hex
        for _ in range(_RACE_ROUNDS):
            run = self._try_start_run(invocation_id, allowed, owner, lease_s)
            if run is not None:
                return run
        raise TransitionError(
            f"invocation {invocation_id} kept changing while it was being started; try again"
        )

    def _try_start_run(
        self, invocation_id: str, allowed: frozenset[Status], owner: str, lease_s: float
    ) -> Run | None:
        """One attempt of `start_run`: read, decide, then one conditional UPDATE that holds only
        if the row is still as read (same status and attempts, and for a takeover the same
        expired lease or dead owner). None if another caller changed it first."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                _select_by(
                    t.invocations,
                    "invocation_id",
                    ("status", "attempts", "lease_expires_at", "lease_owner"),
                ),
                {_KEY: invocation_id},
            ).first()
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            status = Status(row.status)
            expired = row.lease_expires_at is None or row.lease_expires_at < now
            dead = not expired and owner_is_dead(row.lease_owner)
            stale = status is Status.running and (expired or dead)
            if status is Status.running and not stale and status not in allowed:
                raise LeaseHeld(
                    f"invocation {invocation_id} is running (its runner holds it until "
                    f"{row.lease_expires_at:%H:%M:%S} UTC)",
                    row.lease_expires_at,
                )
            if status not in allowed and not stale:
                raise TransitionError(
                    f"invocation {invocation_id} is {status.value}; it can be run only when "
                    f"{' or '.join(sorted(s.value for s in allowed))}"
                )
            number = int(row.attempts) + 1
            takeover = ("dead" if dead else "expired") if stale else ""
            won = conn.execute(
                _start_update(takeover),
                {
                    _KEY: invocation_id,
                    "_status": status,
                    "_attempts": row.attempts,
                    "_owner": row.lease_owner,
                    "_now": now,
                    "status": Status.running,
                    "attempts": number,
                    "started_at": now,
                    "finished_at": None,
                    "error_type": None,
                    "error_message": None,
                    "lease_owner": owner,
                    "lease_expires_at": now + timedelta(seconds=lease_s),
                },
            ).rowcount
            if not won:
                return None
            if stale:
                # The dead runner's open run is closed as terminated, its partial trace kept.
                conn.execute(
                    update(t.runs)
                    .where(t.runs.c.invocation_id == invocation_id)
                    .where(t.runs.c.status == Status.running)
                    .values(
                        status=Status.terminated,
                        finished_at=now,
                        error_type="RunnerLost",
                        error_message="the runner holding this run stopped without finishing",
                    )
                )
            run = Run(invocation_id=invocation_id, number=number, started_at=now)
            conn.execute(insert(t.runs), _row(run, t.runs))
        return run

    def finish_run(
        self,
        run: Run,
        *,
        invocation: dict[str, Any],
        generations: list[Generation],
        scores: list[StandardScore],
    ) -> Status:
        """Record a finished run in one transaction.

        If the invocation is no longer running this run (terminated, completed or taken over
        while it was in flight), the late result is discarded: the invocation is left as it
        is, the run ends `terminated` (`run.status` too, so the caller can tell) keeping its
        trace and output, and its generations are stored all the same: they were paid for.
        Returns the invocation's status after the write.
        """
        _check_columns(t.invocations, invocation)
        with self.engine.begin() as conn:
            # One conditional write decides: the run is live only if the invocation is still
            # running this very run (a terminate, a takeover or a complete moved it on).
            live = conn.execute(
                _finish_update(),
                {
                    **invocation,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    _KEY: run.invocation_id,
                    "_running": Status.running,
                    "_number": run.number,
                },
            ).rowcount
            if generations:
                # Every generation was paid for: a discarded run's stay too, under its run_id.
                conn.execute(insert(t.generations), [_row(g, t.generations) for g in generations])
            if live:
                conn.execute(_update_by(t.runs, "run_id"), {**_row(run, t.runs), _KEY: run.run_id})
                if scores:
                    conn.execute(insert(t.scores), [_row(s, t.scores) for s in scores])
                return Status(invocation.get("status", Status.running))
            current = conn.execute(
                _select_by(t.invocations, "invocation_id", ("status",)), {_KEY: run.invocation_id}
            ).scalar()
            if current is None:
                raise NotFound(f"invocation {run.invocation_id!r} not found")
            status = Status(current)
            run.status = Status.terminated
            if run.error_type is None:
                run.error_type = "Discarded"
                run.error_message = (
                    f"the invocation was {status.value} when this run finished; "
                    "its result was discarded"
                )
            conn.execute(
                update(t.runs)
                .where(t.runs.c.run_id == run.run_id)
                .values(
                    status=Status.terminated,
                    finished_at=run.finished_at or utcnow(),
                    output=run.output,
                    error_type=run.error_type,
                    error_message=run.error_message,
                    trace=_row(run, t.runs)["trace"],
                )
            )
            return status

    def complete_run(
        self,
        run: Run,
        *,
        allowed: frozenset[Status],
        invocation: dict[str, Any],
        scores: list[StandardScore],
    ) -> Run:
        """Open and finish a run recorded by hand (`invocation_complete`) in ONE transaction:
        the run, the invocation's new values and the score rows are written together or not at
        all, so a refused or failing write leaves no phantom run and no half-updated invocation.

        The run gets the next number; a run still in flight loses the invocation (its late
        result is discarded by `finish_run`). Refused with TransitionError unless the status is
        in `allowed`, or if the invocation changed between the read and the write.
        """
        _check_columns(t.invocations, invocation)
        inv_c = t.invocations.c
        with self.engine.begin() as conn:
            row = conn.execute(
                _select_by(t.invocations, "invocation_id", ("status", "attempts")),
                {_KEY: run.invocation_id},
            ).first()
            if row is None:
                raise NotFound(f"invocation {run.invocation_id!r} not found")
            status = Status(row.status)
            if status not in allowed:
                raise TransitionError(
                    f"invocation {run.invocation_id} is {status.value}; it can be completed only "
                    f"when {' or '.join(sorted(s.value for s in allowed))}"
                )
            run.number = int(row.attempts) + 1
            changed = conn.execute(
                update(t.invocations)
                .where(inv_c.invocation_id == run.invocation_id)
                .where(inv_c.status == row.status)
                .where(inv_c.attempts == row.attempts)
                .values(
                    **invocation,
                    attempts=run.number,
                    started_at=run.started_at,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if changed.rowcount != 1:
                raise TransitionError(
                    f"invocation {run.invocation_id} changed while it was being completed; "
                    "read it again and retry"
                )
            conn.execute(insert(t.runs), _row(run, t.runs))
            if scores:
                conn.execute(insert(t.scores), [_row(s, t.scores) for s in scores])
        return run

    def save_trace(self, run: Run) -> None:
        """Persist a run's partial trace while it is still going (kept if it is terminated)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.runs)
                .where(t.runs.c.run_id == run.run_id)
                .values(trace=_row(run, t.runs)["trace"])
            )

    def transition(
        self,
        invocation_id: str,
        to: Status,
        *,
        allowed: frozenset[Status],
        values: dict[str, Any] | None = None,
    ) -> Invocation:
        """Guarded status change (terminate, complete, requeue); refused with the current status."""
        inv_c = t.invocations.c
        for _ in range(_RACE_ROUNDS):
            now = utcnow()
            extra: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
            if to in FINAL_STATUSES:
                extra["finished_at"] = now
            with self.engine.begin() as conn:
                won = conn.execute(
                    update(t.invocations)
                    .where(inv_c.invocation_id == invocation_id, inv_c.status.in_(allowed))
                    .values(status=to, **extra, **(values or {}))
                ).rowcount
                if won and to is Status.terminated:
                    conn.execute(
                        update(t.runs)
                        .where(t.runs.c.invocation_id == invocation_id)
                        .where(t.runs.c.status == Status.running)
                        .values(status=Status.terminated, finished_at=now)
                    )
                row = conn.execute(
                    select(t.invocations).where(inv_c.invocation_id == invocation_id)
                ).first()
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            if won:
                return Invocation.model_validate(row._mapping)
            status = Status(row.status)
            if status not in allowed:
                raise TransitionError(
                    f"invocation {invocation_id} is {status.value}; cannot make it {to.value}"
                )
            # It came back to an allowed status after the UPDATE missed it: decide again.
        raise TransitionError(
            f"invocation {invocation_id} kept changing while it was being made {to.value}; "
            "try again"
        )

    def terminated_among(self, invocation_ids: list[str]) -> list[str]:
        """Which of these invocations are terminated now (one query, for the cancel watcher)."""
        if not invocation_ids:
            return []
        inv_c = t.invocations.c
        with self._read() as conn:
            return list(
                conn.execute(
                    select(inv_c.invocation_id)
                    .where(inv_c.invocation_id.in_(invocation_ids))
                    .where(inv_c.status == Status.terminated)
                ).scalars()
            )

    def renew_leases(self, invocation_ids: list[str], owner: str, lease: timedelta) -> None:
        """Extend the leases this runner holds (its heartbeat)."""
        if not invocation_ids:
            return
        inv_c = t.invocations.c
        with self.engine.begin() as conn:
            conn.execute(
                update(t.invocations)
                .where(inv_c.invocation_id.in_(invocation_ids))
                .where(inv_c.lease_owner == owner)
                .where(inv_c.status == Status.running)
                .values(lease_expires_at=utcnow() + lease)
            )

    def test_for_flow_run(self, flow_run_id: str) -> str | None:
        with self._read() as conn:
            return conn.execute(
                select(t.tests.c.test_id).where(t.tests.c.flow_run_id == flow_run_id)
            ).scalar()

    def terminate_unfinished(self, test_id: str, reason: str) -> int:
        """Mark every queued or running invocation of a test terminated (a cancelled test)."""
        inv_c = t.invocations.c
        now = utcnow()
        with self.engine.begin() as conn:
            # One conditional UPDATE: a cell that finished meanwhile keeps its status.
            count = conn.execute(
                update(t.invocations)
                .where(inv_c.test_id == test_id)
                .where(inv_c.status.in_([Status.queued, Status.running]))
                .values(
                    status=Status.terminated,
                    finished_at=now,
                    error_type="Cancelled",
                    error_message=reason,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            ).rowcount
            conn.execute(
                update(t.runs)
                .where(t.runs.c.status == Status.running)
                .where(
                    t.runs.c.invocation_id.in_(
                        select(inv_c.invocation_id)
                        .where(inv_c.test_id == test_id)
                        .where(inv_c.status == Status.terminated)
                    )
                )
                .values(status=Status.terminated, finished_at=now)
            )
        return int(count)

    # ------------------------------------------------------------------ grading

    def record_grading(
        self,
        invocation_id: str,
        scores: list[StandardScore],
        invocation: dict[str, Any],
        *,
        run_number: int | None = None,
    ) -> bool:
        """Add a (re)grading: new score rows, earlier ones kept; the invocation shows the latest.

        With `run_number` (the graded run's number) it is one conditional write: nothing is
        written, and False returned, if the invocation is running again or its latest run is
        another one (a re-run finished meanwhile: its own grading stands).
        """
        inv_c = t.invocations.c
        statement = update(t.invocations).where(inv_c.invocation_id == invocation_id)
        if run_number is not None:
            statement = statement.where(
                inv_c.attempts == run_number, inv_c.status != Status.running
            )
        with self.engine.begin() as conn:
            if not conn.execute(statement.values(**invocation)).rowcount:
                return False  # nothing was written
            if scores:
                conn.execute(insert(t.scores), [_row(s, t.scores) for s in scores])
        return True

    def add_generations(self, generations: list[Generation]) -> None:
        if generations:
            with self.engine.begin() as conn:
                conn.execute(insert(t.generations), [_row(g, t.generations) for g in generations])

    def scores_for(self, invocation_id: str) -> list[StandardScore]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.scores)
                .where(t.scores.c.invocation_id == invocation_id)
                .order_by(t.scores.c.score_id)
            ).all()
        return [StandardScore.model_validate(r._mapping) for r in rows]

    def judge_cost(self, invocation_id: str, run_id: str | None = None) -> list[float | None]:
        query = select(t.generations.c.cost_usd).where(
            t.generations.c.invocation_id == invocation_id, t.generations.c.role == "judge"
        )
        if run_id:
            query = query.where(t.generations.c.run_id == run_id)
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    # ------------------------------------------------------------------ drafts

    def save_draft(self, draft: Draft) -> Draft:
        """Store a new draft, or replace a whole draft (one upsert, no check-then-write).

        To change some fields of a stored draft, `edit_draft` writes only those.
        """
        draft.updated_at = utcnow()
        row = _row(draft, t.drafts)
        with self.engine.begin() as conn:
            inserted = conn.execute(_insert_new(conn, t.drafts).values(row)).rowcount
            if not inserted:
                conn.execute(
                    update(t.drafts).where(t.drafts.c.draft_id == draft.draft_id).values(row)
                )
        return draft

    def edit_draft(self, draft_id: str, **fields: Any) -> Draft:
        """Change the given fields of a draft, and only those; return the draft as stored.

        The draft they make with the stored one is validated first; a draft promoted or
        deleted meanwhile is NotFound (nothing written).
        """
        current = self.get_draft(draft_id)
        now = utcnow()
        merged = Draft.model_validate({**current.model_dump(), **fields, "updated_at": now})
        values = {k: v for k, v in _row(merged, t.drafts).items() if k in fields}
        values["updated_at"] = now
        values.pop("draft_id", None)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(t.drafts).where(t.drafts.c.draft_id == draft_id).values(values)
            ).rowcount
            row = conn.execute(select(t.drafts).where(t.drafts.c.draft_id == draft_id)).first()
        if not changed or row is None:
            raise NotFound(f"draft {draft_id!r} not found (promoted or deleted meanwhile)")
        return Draft.model_validate(row._mapping)

    def claim_draft(self, draft: Draft) -> None:
        """Take a draft out of the store to promote it, if it is still as read.

        One conditional DELETE: of several promotions at once exactly one gets the draft; the
        others get NotFound (it is gone) or a TransitionError (it was edited since `draft` was
        read: promote it again). `restore_draft` puts it back if the promotion fails.
        """
        dc = t.drafts.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                t.drafts.delete().where(
                    dc.draft_id == draft.draft_id, dc.updated_at == draft.updated_at
                )
            ).rowcount
            if taken:
                return
            exists = conn.execute(select(dc.draft_id).where(dc.draft_id == draft.draft_id)).first()
        if exists is None:
            raise NotFound(f"draft {draft.draft_id!r} not found (promoted or deleted meanwhile)")
        raise TransitionError(
            f"draft {draft.draft_id} was edited while it was being promoted; promote it again"
        )

    def restore_draft(self, draft: Draft) -> None:
        """Put back a draft taken by `claim_draft` whose promotion failed."""
        with self.engine.begin() as conn:
            conn.execute(_insert_new(conn, t.drafts).values(_row(draft, t.drafts)))

    def get_draft(self, draft_id: str) -> Draft:
        with self._read() as conn:
            row = conn.execute(select(t.drafts).where(t.drafts.c.draft_id == draft_id)).first()
        if row is None:
            raise NotFound(f"draft {draft_id!r} not found")
        return Draft.model_validate(row._mapping)

    def list_drafts(self, test_id: str) -> list[Draft]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.drafts)
                .where(t.drafts.c.test_id == test_id)
                .order_by(t.drafts.c.created_at)
            ).all()
        return [Draft.model_validate(r._mapping) for r in rows]

    def delete_draft(self, draft_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.drafts.delete().where(t.drafts.c.draft_id == draft_id))
