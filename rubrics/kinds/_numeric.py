"""`numeric`: the last number in the output is close enough to the reference number."""

from __future__ import annotations

import math
import re

from pydantic import Field

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import shorten

_NUMBER = re.compile(
    r"""
    (?<![\w.])                                   # not the tail of a word, id or other number
    (?P<sign>[-+])?
    (?:
        (?P<num>\d+)\s*/\s*(?P<den>\d+)(?![\d.,]\d)  # a simple fraction: 3/4
      | (?P<dec>
            (?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?     # 1,234.5 or 1234.5
          | \.\d+                                    # .5
        )
        (?:[eE](?P<exp>[-+]?\d+))?
    )
    """,
    re.VERBOSE,
)
# Models write minus signs in many ways; all of them mean the same number.
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-", "\ufe63": "-", "\uff0d": "-"})


class NumericParams(KindParams):
    tolerance: float = Field(1e-9, ge=0, description="Absolute tolerance.")
    rel_tolerance: float = Field(0.0, ge=0, description="Relative to the reference.")


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order: commas as thousands separators, signs, decimals,
    exponents and simple fractions (3/4 -> 0.75)."""
    found: list[float] = []
    for match in _NUMBER.finditer(text.translate(_MINUS)):
        sign = -1.0 if match["sign"] == "-" else 1.0
        if match["num"] is not None:
            den = int(match["den"])
            if den == 0:
                continue
            found.append(sign * int(match["num"]) / den)
        else:
            value = float(match["dec"].replace(",", ""))
            if match["exp"] is not None:
                value *= 10.0 ** int(match["exp"])
            found.append(sign * value)
    return found


def last_number(text: str) -> float | None:
    """The answer's number: the last one, since reasoning comes before the result."""
    found = numbers(text)
    return found[-1] if found else None


@standard_kind("numeric", NumericParams)
def numeric(ctx: GradingContext, params: NumericParams) -> StandardOutcome:
    """1 when the output's last number is within tolerance of a reference number, else 0."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    targets = [n for n in (last_number(r) for r in ctx.references) if n is not None]
    if not targets:
        return StandardOutcome.of(False, f"no reference number in {ctx.references}")
    got = last_number(ctx.output)
    if got is None:
        return StandardOutcome.of(False, f"no number in the output {shorten(ctx.output)!r}")
    for target in targets:
        if math.isclose(got, target, rel_tol=params.rel_tolerance, abs_tol=params.tolerance):
            return StandardOutcome.of(True, f"{got:g} equals the reference {target:g}")
    return StandardOutcome.of(False, f"{got:g} differs from the reference {targets[0]:g}")
