"""`exact`: the output equals one of the scenario's references, after optional normalisation."""

from __future__ import annotations

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import normalize, shorten


class ExactParams(KindParams):
    case_sensitive: bool = False
    strip: bool = True
    normalize_whitespace: bool = True
    ignore_punctuation: bool = False


@standard_kind("exact", ExactParams)
def exact(ctx: GradingContext, params: ExactParams) -> StandardOutcome:
    """1 when the output equals any reference (normalised as the params say), else 0."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    if not ctx.references:
        return StandardOutcome.of(False, "scenario has no reference to compare with")
    options = params.model_dump()
    got = normalize(ctx.output, **options)
    for reference in ctx.references:
        if got == normalize(reference, **options):
            return StandardOutcome.of(True, f"matches reference {shorten(reference)!r}")
    return StandardOutcome.of(
        False,
        f"{shorten(ctx.output)!r} matches none of {[shorten(r) for r in ctx.references]}",
    )
