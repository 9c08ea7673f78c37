"""Models as rows, and the statements the store builds once and reuses.

The statements of a cell's writes take their values as execute() parameters: building a
statement and its cache key costs more than running it, and every cell makes several. An
UPDATE given no `.values()` sets the columns named by the parameters and ignores other names,
so callers passing caller-given fields check them with `check_columns` first.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, Update, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from glow.store import tables as t

# The bound parameter naming the row of `select_by` and `update_by`.
KEY = "_key"
# How often a conditional write that lost a race re-reads and decides again before giving up.
RACE_ROUNDS = 50


@functools.cache
def column_names(table: t.Table) -> frozenset[str]:
    """The names of a table's columns."""
    return frozenset(c.name for c in table.columns)


def as_row(obj: BaseModel, table: t.Table, **extra: Any) -> dict[str, Any]:
    """A model as a row: JSON columns get JSON-safe values, the rest stay typed."""
    data = obj.model_dump(include=column_names(table))
    json_cols = t.json_fields(table) & data.keys()
    if json_cols:
        data.update(obj.model_dump(mode="json", include=json_cols))
    data.update(extra)
    return data


@functools.cache
def select_by(table: t.Table, key: str, columns: tuple[str, ...]) -> Select[Any]:
    """SELECT `columns` FROM `table` WHERE `key` = :_key."""
    return select(*(table.c[name] for name in columns)).where(table.c[key] == bindparam(KEY))


@functools.cache
def update_by(table: t.Table, key: str) -> Update:
    """UPDATE `table` SET <the parameters' columns> WHERE `key` = :_key."""
    return update(table).where(table.c[key] == bindparam(KEY))


def insert_new(conn: Connection, table: t.Table) -> Any:
    """INSERT that skips rows whose primary key exists (SQLite and PostgreSQL alike)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # pragma: no cover - the store runs on SQLite and PostgreSQL
        return insert(table)
    return dialect_insert(table).on_conflict_do_nothing()


def check_columns(table: t.Table, values: dict[str, Any]) -> None:
    """Refuse names that are not columns, which an UPDATE built by `update_by` would drop."""
    unknown = values.keys() - column_names(table)
    if unknown:
        raise ValueError(f"not columns of {table.name}: {', '.join(sorted(unknown))}")
