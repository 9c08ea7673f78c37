"""The ledger of record: tests, invocations, runs (with traces), scores and generations.

Prefect shows what happened; the store is what Glow trusts (Prefect's own record of task runs
drops events under load). Every status change goes through a guarded UPDATE, so the lifecycle
holds even with several runners, the API and the CLI writing at once.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Engine,
    Select,
    Update,
    bindparam,
    create_engine,
    event,
    func,
    insert,
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

# Which statuses each operation may start from (the seed's lifecycle).
RUNNABLE = frozenset({Status.queued, Status.failed})
RERUNNABLE = frozenset({Status.queued, Status.failed, Status.completed, Status.terminated})
TERMINABLE = frozenset({Status.queued, Status.running})
COMPLETABLE = frozenset({Status.queued, Status.running, Status.failed})


def owner_is_dead(owner: str | None) -> bool:
    """Whether a lease owner (`host:pid:nonce`, see glow.cancel) was a process on this host that
    no longer exists: its cells can be reclaimed at once instead of after the lease runs out."""
    parts = (owner or "").split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname()[:24] or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


class LeaseHeld(TransitionError):
    """The invocation is running under another live runner's lease."""

    def __init__(self, message: str, expires_at: datetime) -> None:
        super().__init__(message)
        self.expires_at = expires_at


@functools.cache
def _column_names(table: t.Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns)


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


def _check_columns(table: t.Table, values: dict[str, Any]) -> None:
    """Refuse names that are not columns, which an UPDATE built by `_update_by` would drop."""
    unknown = values.keys() - _column_names(table)
    if unknown:
        raise ValueError(f"not columns of {table.name}: {', '.join(sorted(unknown))}")


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

    # ------------------------------------------------------------------ tests

    def create_test(self, record: TestRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(t.tests).values(_row(record, t.tests)))

    def get_test(self, test_id: str) -> TestRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.tests).where(t.tests.c.test_id == test_id)).first()
        if row is None:
            raise NotFound(f"test {test_id!r} not found; `glow tests list` shows the known tests")
        return TestRecord.model_validate(row._mapping)

    def update_test(self, test_id: str, **fields: Any) -> None:
        record = self.get_test(test_id).model_copy(update=fields)
        record.updated_at = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(t.tests).where(t.tests.c.test_id == test_id).values(_row(record, t.tests))
            )

    def list_tests(self, limit: int = 100) -> list[TestRecord]:
        with self.engine.connect() as conn:
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
            for i in range(0, len(rows), 500):
                conn.execute(insert(t.invocations), rows[i : i + 500])
        return len(rows)

    def get_invocation(
        self, invocation_id: str, *, runs: bool = True, trace: bool = True
    ) -> Invocation:
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.invocations.c.status, func.count())
                .where(t.invocations.c.test_id == test_id)
                .group_by(t.invocations.c.status)
            ).all()
        return {str(status): int(n) for status, n in rows}

    def count_generations(self, test_id: str) -> int:
        with self.engine.connect() as conn:
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
        now = utcnow()
        owner = owner or uuid.uuid4().hex
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
            stale = status is Status.running and (
                row.lease_expires_at is None
                or row.lease_expires_at < now
                or owner_is_dead(row.lease_owner)
            )
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
            number = int(row.attempts) + 1
            run = Run(invocation_id=invocation_id, number=number, started_at=now)
            conn.execute(
                _update_by(t.invocations, "invocation_id"),
                {
                    _KEY: invocation_id,
                    "status": Status.running,
                    "attempts": number,
                    "started_at": now,
                    "finished_at": None,
                    "error_type": None,
                    "error_message": None,
                    "lease_owner": owner,
                    "lease_expires_at": now + timedelta(seconds=lease_s),
                },
            )
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

        If the invocation was terminated while the run was in flight, the late result is
        discarded: the run keeps its trace but the invocation stays terminated. Returns the
        invocation's status after the write.
        """
        _check_columns(t.invocations, invocation)
        with self.engine.begin() as conn:
            current = conn.execute(
                _select_by(t.invocations, "invocation_id", ("status", "attempts")),
                {_KEY: run.invocation_id},
            ).first()
            if current is None:
                raise NotFound(f"invocation {run.invocation_id!r} not found")
            live = Status(current.status) is Status.running and current.attempts == run.number
            if not live:
                run.status = Status.terminated
                conn.execute(
                    update(t.runs)
                    .where(t.runs.c.run_id == run.run_id)
                    .values(
                        status=Status.terminated,
                        finished_at=run.finished_at or utcnow(),
                        trace=_row(run, t.runs)["trace"],
                    )
                )
                return Status(current.status)
            conn.execute(_update_by(t.runs, "run_id"), {**_row(run, t.runs), _KEY: run.run_id})
            conn.execute(
                _update_by(t.invocations, "invocation_id"),
                {
                    **invocation,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    _KEY: run.invocation_id,
                },
            )
            if generations:
                conn.execute(insert(t.generations), [_row(g, t.generations) for g in generations])
            if scores:
                conn.execute(insert(t.scores), [_row(s, t.scores) for s in scores])
        return Status(invocation.get("status", Status.running))

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
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(inv_c.status).where(inv_c.invocation_id == invocation_id)
            ).first()
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            status = Status(row.status)
            if status not in allowed:
                raise TransitionError(
                    f"invocation {invocation_id} is {status.value}; cannot make it {to.value}"
                )
            extra: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
            if to in FINAL_STATUSES:
                extra["finished_at"] = now
            conn.execute(
                update(t.invocations)
                .where(inv_c.invocation_id == invocation_id)
                .values(status=to, **extra, **(values or {}))
            )
            if to is Status.terminated:
                conn.execute(
                    update(t.runs)
                    .where(t.runs.c.invocation_id == invocation_id)
                    .where(t.runs.c.status == Status.running)
                    .values(status=Status.terminated, finished_at=now)
                )
        return self.get_invocation(invocation_id, runs=False)

    def terminated_among(self, invocation_ids: list[str]) -> list[str]:
        """Which of these invocations are terminated now (one query, for the cancel watcher)."""
        if not invocation_ids:
            return []
        inv_c = t.invocations.c
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.tests.c.test_id).where(t.tests.c.flow_run_id == flow_run_id)
            ).scalar()

    def terminate_unfinished(self, test_id: str, reason: str) -> int:
        """Mark every queued or running invocation of a test terminated (a cancelled test)."""
        inv_c = t.invocations.c
        now = utcnow()
        with self.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(inv_c.invocation_id)
                    .where(inv_c.test_id == test_id)
                    .where(inv_c.status.in_([Status.queued, Status.running]))
                ).scalars()
            )
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                conn.execute(
                    update(t.invocations)
                    .where(inv_c.invocation_id.in_(chunk))
                    .values(
                        status=Status.terminated,
                        finished_at=now,
                        error_type="Cancelled",
                        error_message=reason,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
                conn.execute(
                    update(t.runs)
                    .where(t.runs.c.invocation_id.in_(chunk))
                    .where(t.runs.c.status == Status.running)
                    .values(status=Status.terminated, finished_at=now)
                )
        return len(ids)

    # ------------------------------------------------------------------ grading

    def record_grading(
        self, invocation_id: str, scores: list[StandardScore], invocation: dict[str, Any]
    ) -> None:
        """Add a (re)grading: new score rows, earlier ones kept; the invocation shows the latest."""
        with self.engine.begin() as conn:
            if scores:
                conn.execute(insert(t.scores), [_row(s, t.scores) for s in scores])
            conn.execute(
                update(t.invocations)
                .where(t.invocations.c.invocation_id == invocation_id)
                .values(**invocation)
            )

    def add_generations(self, generations: list[Generation]) -> None:
        if generations:
            with self.engine.begin() as conn:
                conn.execute(insert(t.generations), [_row(g, t.generations) for g in generations])

    def scores_for(self, invocation_id: str) -> list[StandardScore]:
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    # ------------------------------------------------------------------ drafts

    def save_draft(self, draft: Draft) -> Draft:
        draft.updated_at = utcnow()
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(t.drafts.c.draft_id).where(t.drafts.c.draft_id == draft.draft_id)
            ).first()
            if exists:
                conn.execute(
                    update(t.drafts)
                    .where(t.drafts.c.draft_id == draft.draft_id)
                    .values(_row(draft, t.drafts))
                )
            else:
                conn.execute(insert(t.drafts).values(_row(draft, t.drafts)))
        return draft

    def get_draft(self, draft_id: str) -> Draft:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.drafts).where(t.drafts.c.draft_id == draft_id)).first()
        if row is None:
            raise NotFound(f"draft {draft_id!r} not found")
        return Draft.model_validate(row._mapping)

    def list_drafts(self, test_id: str) -> list[Draft]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.drafts)
                .where(t.drafts.c.test_id == test_id)
                .order_by(t.drafts.c.created_at)
            ).all()
        return [Draft.model_validate(r._mapping) for r in rows]

    def delete_draft(self, draft_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.drafts.delete().where(t.drafts.c.draft_id == draft_id))
