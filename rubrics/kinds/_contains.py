"""`contains`: the output mentions a reference (or given values), anywhere in its text."""

from __future__ import annotations

from pydantic import Field

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import normalize, shorten


class ContainsParams(KindParams):
    values: list[str] | None = Field(
        None, min_length=1, description="Look for these instead of the scenario's references."
    )
    case_sensitive: bool = False
    all: bool = Field(False, description="Require every value, not just one.")


@standard_kind("contains", ContainsParams)
def contains(ctx: GradingContext, params: ContainsParams) -> StandardOutcome:
    """1 when any (or, with `all`, every) value appears in the output, else 0."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    values = params.values if params.values is not None else ctx.references
    if not values:
        return StandardOutcome.of(False, "no values to look for: no params.values, no reference")
    # Whitespace is normalised on both sides so line breaks in a long answer do not hide a match.
    haystack = normalize(ctx.output, case_sensitive=params.case_sensitive)
    found = [v for v in values if normalize(v, case_sensitive=params.case_sensitive) in haystack]
    missing = [shorten(v, 40) for v in values if v not in found]
    if params.all:
        ok = not missing
        why = "contains all values" if ok else f"missing {missing}"
    else:
        ok = bool(found)
        why = f"contains {shorten(found[0], 40)!r}" if ok else f"contains none of {missing}"
    return StandardOutcome.of(ok, why)
