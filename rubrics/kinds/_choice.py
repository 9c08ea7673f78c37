"""`choice`: the letter a model picked in a multiple-choice question equals the reference."""

from __future__ import annotations

import re
import string

from pydantic import Field, field_validator

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind
from rubrics.kinds._text import normalize, shorten


class ChoiceParams(KindParams):
    letters: str | None = Field(
        None,
        description="Valid letters, e.g. ABCD. Default: one per scenario.choices, else ABCD.",
    )

    @field_validator("letters")
    @classmethod
    def _upper_letters(cls, letters: str | None) -> str | None:
        if letters is not None and not (letters.isalpha() and letters.isascii()):
            raise ValueError(f"letters must be ASCII letters, got {letters!r}")
        return letters.upper() if letters else letters


def allowed_letters(ctx: GradingContext, params: ChoiceParams) -> str:
    if params.letters:
        return params.letters
    if ctx.scenario.choices:
        return string.ascii_uppercase[: len(ctx.scenario.choices)]
    return "ABCD"


def extract_letter(output: str, letters: str, choices: list[str] | None = None) -> str | None:
    """The letter the output commits to, or None when it commits to none (or to several).

    Tried from most to least explicit, so "Answer: B" wins over a stray "(A)" in the reasoning.
    """
    cls = f"[{letters}{letters.lower()}]"
    text = output.strip()
    # 1. an explicit phrase: "Answer: B", "the answer is (b)", "Final answer - B."; the last wins
    # A lower-case letter followed by more words is an article ("the answer is a city"), not a pick.
    phrase = re.compile(
        rf"(?i:answer)\s*(?i:is|:|-|=)?\s*(?i:option\s+|choice\s+)?[(\[*]*"
        rf"(?:([{letters}])|([{letters.lower()}])(?!\s+[A-Za-z]))[)\]*]*(?![A-Za-z])"
    )
    hits = phrase.findall(text)
    if hits:
        upper, lower = hits[-1]
        return (upper or lower).upper()
    # 2. the whole output is one letter: "B", "(B)", "b.", "**B**"
    alone = re.fullmatch(rf"[(\[*]*({cls})[)\].:*]*", text)
    if alone:
        return alone.group(1).upper()
    # 3. it starts with a labelled option: "B) Paris", "B. Paris", "(B) Paris"
    lead = re.match(rf"[(\[*]*([{letters}])(?:[)\].:]|\*\*)\s", text)
    if lead:
        return lead.group(1)
    # 4. one distinct parenthesised letter anywhere: "I'd go with (C) because ..."
    bracketed = set(re.findall(rf"\(([{letters}])\)", text))
    if len(bracketed) == 1:
        return bracketed.pop()
    # 5. the text of exactly one choice
    if choices:
        mentioned = {
            letter
            for letter, choice in zip(string.ascii_uppercase, choices, strict=False)
            if letter in letters and normalize(choice) and normalize(choice) in normalize(text)
        }
        if len(mentioned) == 1:
            return mentioned.pop()
    # 6. one distinct standalone capital letter: "I think B" (ambiguity means no answer)
    standalone = set(re.findall(rf"(?<![A-Za-z'])([{letters}])(?![A-Za-z'])", text))
    if len(standalone) == 1:
        return standalone.pop()
    return None


def reference_letter(reference: str, letters: str, choices: list[str] | None) -> str | None:
    """A reference given as a letter ("B", "(b)") or as the text of one of the choices."""
    bare = reference.strip().strip("()[].: ").upper()
    if len(bare) == 1 and bare in letters:
        return bare
    if choices:
        for letter, choice in zip(string.ascii_uppercase, choices, strict=False):
            if normalize(choice) == normalize(reference):
                return letter
    return None


@standard_kind("choice", ChoiceParams)
def choice(ctx: GradingContext, params: ChoiceParams) -> StandardOutcome:
    """1 when the letter picked in the output is the reference's letter, else 0."""
    if ctx.output is None:
        return StandardOutcome.no_output()
    letters = allowed_letters(ctx, params)
    choices = ctx.scenario.choices
    expected = {
        letter
        for letter in (reference_letter(r, letters, choices) for r in ctx.references)
        if letter is not None
    }
    if not expected:
        raise ValueError(
            f"reference {ctx.references} is neither a letter in {letters} "
            "nor the text of one of the scenario's choices"
        )
    picked = extract_letter(ctx.output, letters, choices)
    if picked is None:
        return StandardOutcome.of(False, f"no single choice found in {shorten(ctx.output)!r}")
    want = "/".join(sorted(expected))
    return StandardOutcome.of(picked in expected, f"picked {picked}, expected {want}")
