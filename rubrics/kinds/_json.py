"""`json`: the output is JSON, valid against a schema, with given fields holding given values.

The score is the fraction of checks passed (parses, schema, each field), so a reply that is
valid JSON with one wrong field still earns partial credit. Schemas are checked with the
`jsonschema` package, which also vets the schema itself when the rubric is loaded.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from pydantic import Field, field_validator

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import shorten

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_MISSING = object()


class JsonParams(KindParams):
    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="A JSON Schema the parsed output must satisfy."
    )
    fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Path (a.b[0].c or a.b.0.c) -> expected value; each path is one check.",
    )

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as err:
                raise ValueError(f"invalid JSON schema: {err.message}") from None
        return schema

    @field_validator("fields")
    @classmethod
    def _valid_paths(cls, fields: dict[str, Any]) -> dict[str, Any]:
        for path in fields:
            parse_path(path)
        return fields


def parse_path(path: str) -> list[str | int]:
    """`a.b[0].c` -> ["a", "b", 0, "c"]; digits-only segments index lists too (a.0.c)."""
    tokens: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and tokens:
            pos += 1
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            raise ValueError(f"invalid field path {path!r} at position {pos}")
        key, index = match.groups()
        tokens.append(int(index) if index is not None else key)
        pos = match.end()
    if not tokens:
        raise ValueError("empty field path")
    return tokens


def lookup(document: Any, path: list[str | int]) -> Any:
    node = document
    for token in path:
        if isinstance(node, dict):
            node = node.get(str(token), _MISSING)
        elif isinstance(node, list) and (isinstance(token, int) or token.isdigit()):
            index = int(token)
            node = node[index] if -len(node) <= index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def parse_json_output(output: str) -> Any:
    """The JSON document of the output: the whole text, or the first fenced block that parses.

    Raises ValueError when neither is JSON; a bare JSON fragment inside prose is not accepted,
    since a rubric asking for JSON means the reply itself is meant to be JSON.
    """
    try:
        return json.loads(output)
    except ValueError as err:
        first_error = err
    for block in _FENCE.findall(output):
        try:
            return json.loads(block)
        except ValueError:
            continue
    raise ValueError(f"not JSON: {first_error}")


@standard_kind("json", JsonParams)
def json_kind(ctx: GradingContext, params: JsonParams) -> StandardOutcome:
    """Fraction of checks passed: parses as JSON, matches the schema, each field's value."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    total = 1 + (params.json_schema is not None) + len(params.fields)
    try:
        document = parse_json_output(ctx.output)
    except ValueError as err:
        return StandardOutcome(score=0.0, rationale=f"{err} in {shorten(ctx.output)!r}")
    passed = 1
    failures: list[str] = []
    if params.json_schema is not None:
        validator_cls = jsonschema.validators.validator_for(params.json_schema)
        error = jsonschema.exceptions.best_match(
            validator_cls(params.json_schema).iter_errors(document)
        )
        if error is None:
            passed += 1
        else:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            failures.append(f"schema: {where}: {error.message}")
    for path, expected in params.fields.items():
        got = lookup(document, parse_path(path))
        if got is _MISSING:
            failures.append(f"{path}: missing")
        # bool is an int in Python, but JSON true is not the number 1.
        elif got != expected or isinstance(got, bool) != isinstance(expected, bool):
            failures.append(f"{path}: {shorten(json.dumps(got), 40)} != {json.dumps(expected)}")
        else:
            passed += 1
    why = "; ".join(failures) if failures else f"all {total} checks passed"
    return StandardOutcome(score=passed / total, rationale=why)
