"""`regex`: the output matches a pattern, or the pattern's captured answer equals a reference.

Patterns run on the `regex` package (re-compatible, VERSION0) for its `timeout=`: a pattern that
backtracks catastrophically on some output (`(a|aa)+$` on "aaa...!") fails its standard with a
clear error after `timeout_s`, instead of holding a CPU, and the grading thread, for good; and
it matches with the GIL released (`concurrent=True`, safe on an immutable str), so the API and
other cells run meanwhile.
"""

from __future__ import annotations

from functools import reduce
from typing import Literal

import regex as re
from pydantic import Field, ValidationInfo, field_validator

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import shorten

Flag = Literal["ignorecase", "multiline", "dotall", "verbose", "ascii"]
_FLAGS: dict[str, int] = {
    "ignorecase": re.IGNORECASE,
    "multiline": re.MULTILINE,
    "dotall": re.DOTALL,
    "verbose": re.VERBOSE,
    "ascii": re.ASCII,
}


DEFAULT_TIMEOUT_S = 2.0


class RegexTimeout(TimeoutError):
    """The pattern took longer than its time limit on this output (catastrophic backtracking)."""


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
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S,
        gt=0,
        le=60,
        description="Longest one output's matching may take; past it the standard fails.",
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


def _flags(names: list[str]) -> int:
    return reduce(lambda acc, name: acc | _FLAGS[name], names, 0)


@standard_kind("regex", RegexParams, blocking=True)
def regex(ctx: GradingContext, params: RegexParams) -> StandardOutcome:
    """1 when the pattern matches (and, with `match_reference`, captures a reference), else 0."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    pattern = params.compiled()
    # Trailing newlines from a model are noise, not part of the answer a fullmatch judges.
    text = ctx.output.strip()
    try:
        if params.mode == "fullmatch":
            match = pattern.fullmatch(text, timeout=params.timeout_s, concurrent=True)
        else:
            # The last match: a final answer comes after the reasoning that may mention some.
            matches = list(pattern.finditer(text, timeout=params.timeout_s, concurrent=True))
            match = matches[-1] if matches else None
    except TimeoutError:
        raise RegexTimeout(
            f"/{params.pattern}/ took over {params.timeout_s:g} s on this output "
            f"({len(text)} characters) and was stopped: the pattern backtracks "
            "catastrophically; rewrite it (e.g. no nested quantifiers like (a+)+)"
        ) from None
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
