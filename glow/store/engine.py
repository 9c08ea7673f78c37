"""The store's database: engine setup (pool, SQLite pragmas), Alembic migrations, connections.

On SQLite every write transaction begins IMMEDIATE and every read transaction deferred: a writer
takes the write lock up front, a reader reads a WAL snapshot and never waits behind a writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

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
        # Writers take the write lock up front; the store's reads (`StoreEngine._read`) begin
        # deferred and read a WAL snapshot, so they never wait behind a writer.
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for the store at `url`: SQLite (WAL, IMMEDIATE writers) or PostgreSQL."""
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


class StoreEngine:
    """The engine every part of `glow.store.Store` reads and writes through."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the store at `url`; with `create`, bring its schema up to date first."""
        self.url = url
        self.engine = make_engine(url)
        if create:
            migrate(self.engine)

    def _read(self) -> Connection:
        """A connection for reads only: on SQLite its transaction does not take the write lock."""
        return self.engine.connect().execution_options(**{_READ_ONLY: True})
