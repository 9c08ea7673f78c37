"""The store's tables, derived from the pydantic models so the schema is declared once.

Scalar fields become typed columns (queryable, indexable); nested fields (trace, scores, spec)
become JSON columns. A few columns exist only for bookkeeping (leases, regrade history) and are
added by hand below. Migrations under `migrations/` are frozen snapshots made by Alembic's
autogenerate from this metadata.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from glow.models import Draft, Generation, Invocation, Run, StandardScore, TestRecord

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are UTC everywhere; SQLite forgets the zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _sql_type(annotation: Any) -> tuple[Any, bool]:
    """Map a pydantic field annotation to (SQLAlchemy type, nullable)."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner, _ = _sql_type(args[0])
            return inner, nullable
        return JSON(), nullable
    if origin is typing.Literal:
        return String(32), nullable
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return Boolean(), nullable
        if issubclass(annotation, Enum):
            return String(32), nullable
        if issubclass(annotation, int):
            return Integer(), nullable
        if issubclass(annotation, float):
            return Float(), nullable
        if issubclass(annotation, str):
            return Text(), nullable
        if issubclass(annotation, datetime):
            return UTCDateTime(), nullable
    return JSON(), nullable


def _columns(
    model: type[BaseModel],
    primary_key: str | None,
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
    short: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Column[Any]]:
    """Columns for a model's fields. `short` text fields become VARCHAR so they can be indexed."""
    columns: list[Column[Any]] = []
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        sql_type, nullable = _sql_type(field.annotation)
        if name == primary_key or name in short:
            sql_type = String(64) if name.endswith("_id") else String(255)
        columns.append(Column(name, sql_type, primary_key=name == primary_key, nullable=nullable))
    return columns


def json_fields(table: Table) -> set[str]:
    return {c.name for c in table.columns if isinstance(c.type, JSON)}


tests = Table(
    "tests",
    metadata,
    *_columns(TestRecord, "test_id"),
    Column("budget_spent_usd", Float, nullable=False, server_default="0"),
)

invocations = Table(
    "invocations",
    metadata,
    *_columns(
        Invocation,
        "invocation_id",
        exclude={"runs"},
        short={"test_id", "scenario_id", "model", "agent", "category"},
    ),
    # A runner holds a lease while a cell runs, so a crashed runner's cells can be reclaimed
    # and two live runners never take the same cell.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Index("ix_invocations_test_status", "test_id", "status"),
    Index("ix_invocations_test_model", "test_id", "model"),
    # Keyset pages by invocation_id (migration 0002).
    Index("ix_invocations_test_id", "test_id", "invocation_id"),
    Index("ix_invocations_test_status_id", "test_id", "status", "invocation_id"),
)

runs = Table(
    "runs",
    metadata,
    *_columns(Run, "run_id", short={"invocation_id"}),
    Index("ix_runs_invocation", "invocation_id", "number"),
)

generations = Table(
    "generations",
    metadata,
    *_columns(Generation, "generation_id", short={"test_id", "invocation_id", "run_id"}),
    Index("ix_generations_test", "test_id"),
    Index("ix_generations_invocation", "invocation_id"),
)

scores = Table(
    "scores",
    metadata,
    Column("score_id", Integer, primary_key=True, autoincrement=True),
    *_columns(StandardScore, None, short={"invocation_id", "run_id", "grading_id"}),
    Index("ix_scores_invocation", "invocation_id"),
)

drafts = Table(
    "drafts",
    metadata,
    *_columns(Draft, "draft_id", short={"test_id"}),
    Index("ix_drafts_test", "test_id"),
)
