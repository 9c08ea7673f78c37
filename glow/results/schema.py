"""The parquet schemas of a test's results, and building their tables from store rows or columns.

The Arrow schemas of invocations, generations and aggregated are *derived* from the pydantic
models in `glow.models` by `arrow_schema`, so the files and the store never drift apart; the
column reference is the `glow.results` package docstring.

Everything here works on whole columns (pyarrow): a test can hold a million invocations, and one
pydantic object per row would cost minutes and gigabytes.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from enum import Enum
from functools import cache
from itertools import islice
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from glow.models import AggregatedRow, Generation, Invocation

SCHEMA_VERSION = "1"
SCORE_PREFIX = "score__"
# The `category` of the rows over all categories (AggregatedResults, pairwise, regression).
OVERALL = "*"

# Rows are converted in chunks so the Python objects of one chunk at a time are alive, not a
# million dicts' worth of converted lists.
_CHUNK_ROWS = 65_536
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_INVOCATION_EXCLUDE = frozenset({"runs", "scores"})
_AGGREGATED_EXCLUDE = frozenset({"standard_means"})


def score_column(standard: str) -> str:
    """Column name holding a standard's score (per invocation) or mean (aggregated)."""
    return f"{SCORE_PREFIX}{standard}"


# --------------------------------------------------------------------------- schema derivation


def _is_str_like(tp: Any) -> bool:
    """str, a str-valued enum, or a Literal of strings: all stored as Arrow strings."""
    if tp is str:
        return True
    if isinstance(tp, type) and issubclass(tp, Enum):
        return all(isinstance(member.value, str) for member in tp)
    if typing.get_origin(tp) is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(tp))
    return False


def _arrow_type(tp: Any) -> tuple[pa.DataType, bool]:
    """Arrow type of one annotation, and whether it is nullable (Optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            inner, _ = _arrow_type(args[0])
            return inner, nullable
        # A union of several shapes (str | list[Message]) has no single Arrow type: keep JSON.
        return pa.string(), nullable
    if _is_str_like(tp):
        return pa.string(), False
    if tp is bool:  # before int: bool is a subclass of int
        return pa.bool_(), False
    if tp is int:
        return pa.int64(), False
    if tp is float:
        return pa.float64(), False
    if tp is datetime:
        return _TIMESTAMP, False
    if origin is Literal:
        values = typing.get_args(tp)
        if all(isinstance(v, bool) for v in values):
            return pa.bool_(), False
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return pa.int64(), False
        return pa.string(), False
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        if len(args) == 1 and _is_str_like(args[0]):
            return pa.list_(pa.string()), False
    # dict, Any, nested models, lists of models: JSON-encoded text.
    return pa.string(), False


def _is_json_field(tp: Any) -> bool:
    """Whether values of this annotation are stored JSON-encoded (see `_arrow_type`)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) != 1 or _is_json_field(args[0])
    if _is_str_like(tp) or tp in (bool, int, float, datetime) or origin is Literal:
        return False
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        return not (len(args) == 1 and _is_str_like(args[0]))
    return True


@cache
def _arrow_schema(model: type[BaseModel], exclude: frozenset[str]) -> pa.Schema:
    fields = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        arrow_type, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def arrow_schema(model: type[BaseModel], exclude: Collection[str] = ()) -> pa.Schema:
    """Arrow schema of a pydantic model's fields, in declaration order.

    This is the single place the parquet column types come from, so adding a field to a model
    adds the column. Mapping: str -> string, int -> int64, float -> float64, bool -> bool,
    datetime -> timestamp[us, UTC], StrEnum/Literal -> string, Optional[X] -> nullable X,
    list[str]/list[StrEnum] -> list<string>, anything else (dict, Any, models) -> JSON string.
    """
    return _arrow_schema(model, frozenset(exclude))


# --------------------------------------------------------------------------- rows -> tables


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _to_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _timestamps(values: Sequence[Any] | pa.Array) -> pa.Array:
    """UTC timestamps from datetimes or text (SQLite's "YYYY-MM-DD HH:MM:SS.ffffff", ISO 8601).

    Text is parsed by Arrow a whole column at once; text without an offset is UTC, as the
    store's `UTCDateTime` reads it.
    """
    text: pa.Array | None = values if isinstance(values, pa.Array) else None
    if text is None:
        try:
            text = pa.array(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # datetimes mixed with text
    if text is not None:
        try:
            return text.cast(pa.timestamp("us")).cast(_TIMESTAMP)
        except pa.ArrowInvalid:
            pass
        try:
            return text.cast(_TIMESTAMP)
        except pa.ArrowInvalid:
            pass  # offsets on some values only
    objects = values.to_pylist() if isinstance(values, pa.Array) else values
    parsed = pd.to_datetime(pd.Series(objects, dtype=object), utc=True, format="ISO8601")
    return pa.array(parsed, _TIMESTAMP)


def _column(values: Sequence[Any] | pa.Array, field: pa.Field) -> pa.Array:
    """One column as an Arrow array of `field`'s type, from what a model dump or the store gives.

    Arrow's C++ converter takes Python values in one call, or casts an Arrow array. The
    fallbacks, still a column at a time, are for what databases return: timestamps as text,
    booleans as 0/1.
    """
    if isinstance(values, pa.Array):
        if values.type == field.type:
            return values
        if field.type == _TIMESTAMP and pa.types.is_string(values.type):
            return _timestamps(values)
        return values.cast(field.type)
    try:
        return pa.array(values, field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if field.type == _TIMESTAMP:
            return _timestamps(values)
        if field.type == pa.bool_():
            return pa.array(values, pa.int64()).cast(pa.bool_())
        raise


def _chunks(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, list[Any]]]:
    """Dict rows as column batches of `_CHUNK_ROWS` rows (keys missing from a row are None)."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, _CHUNK_ROWS)):
        names = dict.fromkeys(name for row in chunk for name in row)
        yield {name: [row.get(name) for row in chunk] for name in names}


def _columns_table(
    batches: Iterable[Mapping[str, Sequence[Any] | pa.Array]],
    model: type[BaseModel],
    exclude: frozenset[str],
    standards: Sequence[str] = (),
) -> pa.Table:
    """Convert column batches ({field: values}, values shaped as `model.model_dump()` gives
    them) to a table with the model's Arrow schema, then one float64 column per standard.

    Each column goes through Arrow's C++ converter whole, so no Python runs per row here. A
    column missing from a batch is null; extra columns are ignored. `scores` (dicts, or null) is
    read as a struct whose children are the standards: extra keys are dropped, missing ones null.
    """
    base = arrow_schema(model, exclude)
    schema = pa.schema(list(base) + [pa.field(score_column(s), pa.float64()) for s in standards])
    json_fields = {f.name for f in base if _is_json_field(model.model_fields[f.name].annotation)}
    scores_type = pa.struct([pa.field(s, pa.float64()) for s in standards])

    record_batches = []
    for batch in batches:
        length = len(next(iter(batch.values()), ()))
        arrays = []
        for field in base:
            values = batch.get(field.name)
            if values is None:
                arrays.append(pa.nulls(length, field.type))
            elif field.name in json_fields:
                arrays.append(pa.array([_to_json(v) for v in values], pa.string()))
            else:
                arrays.append(_column(values, field))
        if standards:
            scores = batch.get("scores")
            struct = (
                pa.nulls(length, scores_type) if scores is None else pa.array(scores, scores_type)
            )
            # flatten() folds a null `scores` into every standard's column.
            arrays.extend(struct.flatten())
        record_batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    table = pa.Table.from_batches(record_batches, schema=schema)

    # Arrow does not enforce `nullable=False`: a missing key with a plain default gets it, a
    # missing required value is a broken row, named here rather than written as an invalid file.
    for index, field in enumerate(base):
        if field.nullable or not table.column(index).null_count:
            continue
        default = model.model_fields[field.name].default
        if default is PydanticUndefined or default is None:
            raise ValueError(f"{model.__name__}.{field.name} is required but some rows lack it")
        filled = pc.fill_null(table.column(index), pa.scalar(default, field.type))
        table = table.set_column(index, field, filled)
    return table


def _rows_table(
    rows: Iterable[dict[str, Any]],
    model: type[BaseModel],
    exclude: frozenset[str],
    standards: Sequence[str] = (),
) -> pa.Table:
    """Convert model-dump-shaped dicts to a table (see `_columns_table`), a chunk at a time."""
    return _columns_table(_chunks(rows), model, exclude, standards)


def invocations_table(rows: Iterable[dict[str, Any]], standards: Sequence[str]) -> pa.Table:
    """Invocation rows (dicts shaped like `Invocation.model_dump()`, `runs` optional) as a table.

    The `scores` dict becomes one float64 `score__<standard>` column per rubric standard, so
    pandas users get plain columns; a standard missing from a row's scores is null.
    """
    return _rows_table(rows, Invocation, _INVOCATION_EXCLUDE, standards)


def generations_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Generation rows (dicts shaped like `Generation.model_dump()`) as a table."""
    return _rows_table(rows, Generation, frozenset())


def invocations_table_from_columns(
    batches: Iterable[Mapping[str, Sequence[Any] | pa.Array]], standards: Sequence[str]
) -> pa.Table:
    """`invocations_table` from column batches, e.g. `Store.invocation_columns`.

    The fast path for a whole test: no dict per row is ever built.
    """
    return _columns_table(batches, Invocation, _INVOCATION_EXCLUDE, standards)


def generations_table_from_columns(
    batches: Iterable[Mapping[str, Sequence[Any] | pa.Array]],
) -> pa.Table:
    """`generations_table` from column batches, e.g. `Store.generation_columns`."""
    return _columns_table(batches, Generation, frozenset())


def aggregated_schema(standards: Sequence[str]) -> pa.Schema:
    """Schema of AggregatedResults: AggregatedRow's fields, then one mean column per standard."""
    base = arrow_schema(AggregatedRow, _AGGREGATED_EXCLUDE)
    return pa.schema(list(base) + [pa.field(score_column(s), pa.float64()) for s in standards])
