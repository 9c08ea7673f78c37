"""Reading all of a test's invocations or generations at once, as columns, for the parquet export.

A test can hold a million invocations and as many generations. Read row by row, through
SQLAlchemy or even a bare DBAPI cursor, Python builds an object for every value (about 40
million here), and that was most of the export's time. So on SQLite most columns are read by
SQLite itself: for each chunk of rows one query returns every column as a JSON array
(`json_group_array`), which Arrow parses in C++. Neither step runs Python per value, and neither
holds the GIL, so the two tables can be read on two threads at once.

Only REAL columns still go through the cursor: SQLite writes REALs into JSON with 15 significant
digits, which does not round-trip a double, and costs and scores must come out exactly as stored.

Other databases (PostgreSQL) are read through SQLAlchemy Core, in batches from a server-side
cursor, with SQLAlchemy's per-row result processing skipped.

Either way a batch is {column: values}, `values` being an Arrow array or a sequence of Python
values as the driver gives them, not yet of the model's types: booleans may be 0/1, timestamps
zone-less (meaning UTC) or text; JSON columns are decoded (each distinct text once).
`glow.results` types them a whole column at a time. Batches hold each row once, in no
particular order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    Table,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import NullType

from glow.store.tables import UTCDateTime

Batch = dict[str, Sequence[Any] | pa.Array]

# json_object key of the rowid: pairs the JSON arrays with the REAL columns fetched beside them.
_ROWID = "_glow_rowid"
# JSON text per statement to aim for: what SQLite builds and Arrow parses at once. The first
# range is small, as nothing is known yet about the rows' length.
_JSON_BYTES = 32 * 2**20
_FIRST_WIDTH = 1024


def column_batches(
    engine: Engine, table: Table, test_id: str, exclude: Iterable[str], batch_rows: int
) -> Iterator[Batch]:
    """The rows of `table` whose test_id is `test_id`, as column batches of <= `batch_rows` rows.

    Columns named in `exclude` are left out. `test_id` is the filter itself, so it is filled
    in rather than read a million times.
    """
    skip = {*exclude, "test_id"}
    columns = [c for c in table.c if c.name not in skip]
    decoders = _json_decoders(engine, columns)
    if engine.dialect.name == "sqlite":
        batches = _sqlite_batches(engine, table, columns, test_id, batch_rows)
    else:
        batches = _core_batches(engine, table, columns, test_id, batch_rows)
    for batch in batches:
        length = len(next(iter(batch.values())))
        for name, decode in decoders.items():
            batch[name] = _decode_distinct(batch[name], decode)
        batch["test_id"] = [test_id] * length
        yield batch


def _json_decoders(engine: Engine, columns: list[Column[Any]]) -> dict[str, Callable[[Any], Any]]:
    """SQLAlchemy's decoder of each JSON column whose driver returns text (SQLite does;
    psycopg decodes JSON itself, so PostgreSQL has none)."""
    dialect = engine.dialect
    return {
        column.name: processor
        for column in columns
        if isinstance(column.type, JSON)
        and (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
    }


def _decode_distinct(values: Sequence[Any] | pa.Array, decode: Callable[[Any], Any]) -> list[Any]:
    """`decode` of every value, called once per distinct value (equal values share a result)."""
    if isinstance(values, pa.Array):
        encoded = values.dictionary_encode()
        decoded = [decode(value) for value in encoded.dictionary.to_pylist()]
        decoded.append(None)  # where the index is null
        indices = pc.fill_null(encoded.indices, len(decoded) - 1)
        return list(map(decoded.__getitem__, indices.to_numpy().tolist()))
    cache = {value: decode(value) for value in set(values)}
    return list(map(cache.__getitem__, values))


# --------------------------------------------------------------------------- PostgreSQL & others


def _core_batches(
    engine: Engine, table: Table, columns: list[Column[Any]], test_id: str, batch_rows: int
) -> Iterator[Batch]:
    """Batches through SQLAlchemy Core: yield_per streams from a server-side cursor."""
    names = [c.name for c in columns]
    # NullType has no result processor: the driver's values, no Python call per value.
    query = select(*(type_coerce(c, NullType()).label(c.name) for c in columns)).where(
        table.c.test_id == test_id
    )
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch_rows).execute(query)
        for rows in result.partitions():
            yield dict(zip(names, zip(*rows, strict=True), strict=True))


# --------------------------------------------------------------------------- SQLite


class _SQLiteReader:
    """The two statements that read one chunk (a rowid range) of a table, and their parsing."""

    def __init__(self, table: Table, columns: list[Column[Any]]) -> None:
        self.reals = [c.name for c in columns if isinstance(c.type, Float)]
        self.others = [c.name for c in columns if not isinstance(c.type, Float)]
        name = _identifier(table.name)
        # NOT INDEXED: a scan of the rowid range, in table order, not an index walk with a
        # table lookup per row; the range is this test's own rows (and any interleaved).
        where = f"FROM {name} NOT INDEXED WHERE rowid BETWEEN ? AND ? AND test_id = ?"
        # (rowid stays bare: a quoted "rowid" that names no column would be a string literal.)
        arrays = [f"{_literal(c)}, json_group_array({_identifier(c)})" for c in self.others]
        arrays.append(f"{_literal(_ROWID)}, json_group_array(rowid)")
        self.json_sql = f"SELECT CAST(json_object({', '.join(arrays)}) AS BLOB) {where}"
        reals = "".join(f", {_identifier(c)}" for c in self.reals)
        self.reals_sql = f"SELECT rowid{reals} {where} ORDER BY rowid"
        by_name = {c.name: c for c in columns}
        self.json_schema, self.text_schema = (
            pa.schema(
                [pa.field(c, pa.list_(_json_type(by_name[c], timestamps))) for c in self.others]
                + [pa.field(_ROWID, pa.list_(pa.int64()))]
            )
            for timestamps in (True, False)
        )

    def read(
        self, cursor: sqlite3.Cursor, params: tuple[int, int, str]
    ) -> tuple[Batch | None, int]:
        """One rowid range as a batch (None when it holds no row of the test), and the size of
        its JSON in bytes."""
        blob = cursor.execute(self.json_sql, params).fetchone()[0]
        try:
            parsed = _parse_json(blob, self.json_schema)
        except pa.ArrowInvalid:  # a timestamp not in SQLAlchemy's format: leave it as text
            parsed = _parse_json(blob, self.text_schema)
        columns = {name: parsed.column(name).chunk(0).values for name in parsed.column_names}
        rowids = columns.pop(_ROWID)
        if not len(rowids):
            return None, len(blob)
        real_columns: list[list[Any]] = [[] for _ in range(1 + len(self.reals))]
        cursor.execute(self.reals_sql, params)
        # Small fetches: each row's tuple dies young instead of surviving into the GC's oldest
        # generation, whose full collections otherwise cost seconds at a million rows.
        while rows := cursor.fetchmany(1024):
            for column, values in zip(real_columns, zip(*rows, strict=True), strict=True):
                column.extend(values)
        real_rowids = pa.array(real_columns[0], pa.int64())
        if not rowids.equals(real_rowids):
            # Both statements read one snapshot, so only the order can differ: rowid order.
            order = pc.sort_indices(rowids)
            columns = {name: values.take(order) for name, values in columns.items()}
            if not rowids.take(order).equals(real_rowids):
                raise RuntimeError(f"{self.json_sql!r} and {self.reals_sql!r} read other rows")
        for name, values in zip(self.reals, real_columns[1:], strict=True):
            columns[name] = pa.array(values, pa.float64())
        return columns, len(blob)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_type(column: Column[Any], timestamps: bool) -> pa.DataType:
    """How a non-REAL column's values are read from SQLite's JSON: numbers, or text, which
    Arrow parses as a (zone-less, UTC) timestamp for DateTime columns if `timestamps`."""
    if isinstance(column.type, Integer | Boolean):
        return pa.int64()
    if timestamps and isinstance(column.type, DateTime | UTCDateTime):
        return pa.timestamp("us")
    return pa.string()


def _parse_json(blob: bytes, schema: pa.Schema) -> pa.Table:
    """One JSON object (of arrays) as a one-row table: Arrow's C++ parser, without the GIL.

    The parser's many short-lived buffers come from the system allocator: pyarrow's default
    (mimalloc) hands freed pages back to the OS at once and faults them in again for the next
    chunk, which at a million rows was a third of a million page faults and seconds of system
    time.
    """
    return pa_json.read_json(
        pa.BufferReader(blob),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(blob) + 1),
        parse_options=pa_json.ParseOptions(explicit_schema=schema),
        memory_pool=pa.system_memory_pool(),
    )


def _sqlite_batches(
    engine: Engine, table: Table, columns: list[Column[Any]], test_id: str, batch_rows: int
) -> Iterator[Batch]:
    """Batches from SQLite, a rowid range at a time, all from one snapshot.

    A range spans at most `batch_rows` rowids, fewer when rows are long: each range is sized
    from the JSON bytes per rowid of the one before, to about `_JSON_BYTES`.
    """
    reader = _SQLiteReader(table, columns)
    with engine.connect() as conn:
        cursor = _driver_connection(conn).cursor()
        # A deferred BEGIN reads one snapshot without taking the write lock (the engine's own
        # transactions begin IMMEDIATE, for writers).
        cursor.execute("BEGIN")
        try:
            low, high = cursor.execute(
                f"SELECT min(rowid), max(rowid) FROM {_identifier(table.name)} WHERE test_id = ?",
                (test_id,),
            ).fetchone()
            start, width = low, min(batch_rows, _FIRST_WIDTH)
            while start is not None and start <= high:
                end = min(start + width - 1, high)
                batches, size = _read_range(reader, cursor, start, end, test_id)
                yield from batches
                per_rowid = max(size / (end - start + 1), 1.0)
                start, width = end + 1, max(1, min(batch_rows, int(_JSON_BYTES / per_rowid)))
        finally:
            cursor.execute("ROLLBACK")  # read only: nothing to commit
            cursor.close()


def _read_range(
    reader: _SQLiteReader, cursor: sqlite3.Cursor, low: int, high: int, test_id: str
) -> tuple[list[Batch], int]:
    """One rowid range's batches and JSON bytes; halved while the JSON is over SQLite's length
    limit (1 GB by default, which only rows of huge outputs reach)."""
    try:
        batch, size = reader.read(cursor, (low, high, test_id))
    except sqlite3.DataError:  # SQLITE_TOOBIG: "string or blob too big"
        if low == high:
            raise
        middle = (low + high) // 2
        first, first_size = _read_range(reader, cursor, low, middle, test_id)
        second, second_size = _read_range(reader, cursor, middle + 1, high, test_id)
        return first + second, first_size + second_size
    return ([] if batch is None else [batch]), size


def _driver_connection(conn: Connection) -> sqlite3.Connection:
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"expected a sqlite3 connection, got {type(driver).__name__}")
    return driver
