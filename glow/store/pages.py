"""The API's invocation list pages as JSON text, written mostly by the database.

`InvocationPages.list_invocations_json` gives each invocation of a page as the exact JSON the
API would render from `Invocation.model_dump(mode="json")`. On SQLite one query renders most of
each row (`_page_plan`); floats and timestamps are written by Python so that they come out as
pydantic writes them; anything the fast path cannot render exactly sends the page through
pydantic. Like `glow.store.bulk`, this reads the store for one consumer, fast.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from glow.models import Invocation, Status
from glow.store import tables as t
from glow.store.invocations import Invocations

# The step kinds of `_page_plan`.
_PAGE_OBJECT, _PAGE_FLOAT, _PAGE_TIMESTAMP, _PAGE_CONSTANT = range(4)


class InvocationPages(Invocations):
    """The API's list pages of invocations as JSON text (part of `glow.store.Store`)."""

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
        page of rows into pydantic models and dumping them back costs more CPU than the rest of
        serving a page, and the API's clients queue behind it. On SQLite the database writes
        most of each row's JSON (`_page_plan`); any other database, or a page holding a value
        the fast path cannot render exactly as pydantic would, takes the pydantic path.
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

        select_list, steps = _page_plan()
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
            # (SQLite's default is 2 MiB) keeps them in memory instead of a read from the file
            # each. Set once per pooled connection; it only grows when used.
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
        # Column by column (fewer Python calls than row by row): each step renders one JSON
        # member of every row, then each row's members are joined.
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
                render = _json_float if kind == _PAGE_FLOAT else _json_timestamp
                rendered = render(prefix, columns[index])
                if rendered is None:
                    return None
                members.append(rendered)
        texts = ["{" + ",".join(row) + "}" for row in zip(*members, strict=True)]
        return list(zip(columns[0], texts, strict=True))


@functools.cache
def _page_plan() -> tuple[str, list[tuple[int, int, str]]]:
    """The SELECT list rendering an invocation row as its API JSON, and the steps to join it.

    Derived from `Invocation`'s fields (their order is the JSON's key order) and the columns'
    types, so a new column is rendered without touching this. SQLite's `json_object` writes
    each run of text, integer, boolean and JSON columns in one call (it keeps the number
    tokens of a JSON text verbatim; one call per run of columns is cheaper than a `||` chain
    of `json_quote`s). Floats come back as values for Python to write: SQLite prints 15
    significant digits, which does not round-trip, where json.dumps writes `repr`; timestamps
    too, reshaped faster in Python than in SQL. Column 1 is an `odd` flag, true when SQL
    cannot render a value exactly as pydantic would (a JSON text holding NaN or Infinity, a
    boolean other than 0/1), which sends the page to the pydantic path.
    Steps: (kind, column index, key prefix or constant text).
    """
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
    return ", ".join(select_list), steps


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
