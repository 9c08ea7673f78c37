"""`regex`: the output matches a pattern, or the pattern's captured answer equals a reference."""

from __future__ import annotations

import re
from functools import reduce
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import shorten

Flag = Literal["ignorecase", "multiline", "dotall", "verbose", "ascii"]
_FLAGS: dict[str, re.RegexFlag] = {
    "ignorecase": re.IGNORECASE,
    "multiline": re.MULTILINE,
    "dotall": re.DOTALL,
    "verbose": re.VERBOSE,
    "ascii": re.ASCII,
}


class RegexParams(KindParams):
    # Declared before `pattern` so the pattern's validator can compile with the flags in force.
    flags: list[Flag] = Field(default_factory=list)
    pattern: str
    mode: Literal["search", "fullmatch"] = "search"
    match_reference: bool = Field(
        False, description="Score 1 only when the captured group equals a reference."
    )
    group: int | str | None = Field(
        None, description="Group compared with the reference; default 1 if any, else 0."
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str, info: ValidationInfo) -> str:
        try:
            re.compile(pattern, _flags(info.data.get("flags", [])))
        except re.error as err:
            raise ValueError(f"invalid regex {pattern!r}: {err}") from None
        return pattern

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, _flags(self.flags))


def _flags(names: list[str]) -> re.RegexFlag:
    return reduce(lambda acc, name: acc | _FLAGS[name], names, re.RegexFlag(0))


@standard_kind("regex", RegexParams)
def regex(ctx: GradingContext, params: RegexParams) -> StandardOutcome:
    """1 when the pattern matches (and, with `match_reference`, captures a reference), else 0."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    pattern = params.compiled()
    # Trailing newlines from a model are noise, not part of the answer a fullmatch judges.
    text = ctx.output.strip()
    if params.mode == "fullmatch":
        match = pattern.fullmatch(text)
    else:
        # The last match: a final answer comes after the reasoning that may mention candidates.
        matches = list(pattern.finditer(text))
        match = matches[-1] if matches else None
    if match is None:
        return StandardOutcome.of(False, f"/{params.pattern}/ does not {params.mode} the output")
    if not params.match_reference:
        return StandardOutcome.of(True, f"/{params.pattern}/ matched {shorten(match.group(0))!r}")

    group = params.group if params.group is not None else (1 if pattern.groups else 0)
    try:
        captured = match.group(group)
    except IndexError:
        raise ValueError(f"pattern /{params.pattern}/ has no group {group!r}") from None
    if captured is None:
        return StandardOutcome.of(False, f"group {group!r} did not participate in the match")
    fold = "ignorecase" in params.flags
    got = captured.strip().casefold() if fold else captured.strip()
    for reference in ctx.references:
        if got == (reference.strip().casefold() if fold else reference.strip()):
            return StandardOutcome.of(True, f"captured {shorten(captured)!r} equals the reference")
    return StandardOutcome.of(
        False, f"captured {shorten(captured)!r}, expected one of {ctx.references}"
    )
