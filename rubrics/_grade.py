"""Grading one run against a rubric: a score per applicable standard and a weighted overall.

A kind that fails (a grader bug, params that no longer validate) scores 0 with the error in its
rationale, because one cell's grading must not crash a whole test run. The one exception is
`GradingUnavailable`: a standard whose score cannot be known for an infrastructure reason (its
judge unreachable after retries, answering without a score, refused by the budget, or missing)
stops the grading and propagates, so the caller records a grading error instead of a 0.

Scores supplied by hand (`invocation_complete`) go through the same function: a supplied
standard takes the given score instead of running its kind, the others are graded as usual, and
the weighted mean and category filters are the rubric's own.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from glow.models import Rubric, StandardScore
from rubrics._context import GradingContext, _current_standard
from rubrics._outcome import StandardOutcome
from rubrics._params import CATEGORIES_KEY, CategoriesError, applies_to, kind_params
from rubrics._unavailable import GradingUnavailable

SUPPLIED = "supplied manually"


class NotApplicable(ValueError):
    """A score was supplied for a standard that is not in the rubric or does not apply to the
    scenario's category (it would not count in the rubric's own mean)."""


class StandardResult(BaseModel):
    """The outcome of one standard for one run, with what it needed to pass."""

    name: str
    kind: str
    weight: float
    threshold: float
    score: float = Field(ge=0, le=1)
    passed: bool
    rationale: str | None = None
    error: str | None = Field(None, description="Set when the grader failed (score is then 0).")


class Grade(BaseModel):
    """A run's grade: the applicable standards' results and their weighted mean.

    `score` and `passed` are None when no standard applies to the scenario's category (or the
    applicable ones all weigh 0): there is nothing to average, which is not the same as 0.
    """

    rubric: str
    rubric_version: str
    standards: list[StandardResult]
    score: float | None = Field(None, ge=0, le=1)
    passed: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.rubric}@{self.rubric_version}"

    @property
    def scores(self) -> dict[str, float]:
        """Standard name -> score, the shape of `Invocation.scores`."""
        return {r.name: r.score for r in self.standards}

    def standard_scores(
        self, *, invocation_id: str, run_id: str, grading_id: str
    ) -> list[StandardScore]:
        """The store rows of this grade, one per applicable standard."""
        return [
            StandardScore(
                invocation_id=invocation_id,
                run_id=run_id,
                grading_id=grading_id,
                rubric=self.rubric,
                rubric_version=self.rubric_version,
                standard=r.name,
                kind=r.kind,
                weight=r.weight,
                score=r.score,
                passed=r.passed,
                rationale=r.rationale,
            )
            for r in self.standards
        ]


def _check_supplied(rubric: Rubric, category: str, supplied: Mapping[str, float]) -> None:
    names = {s.name: s for s in rubric.standards}
    for name in supplied:
        spec = names.get(name)
        if spec is None:
            raise NotApplicable(
                f"scores.{name}: not a standard of rubric {rubric.label} "
                f"(its standards: {', '.join(names)})"
            )
        try:
            applies = applies_to(spec, category)
        except CategoriesError:
            applies = False
        if not applies:
            raise NotApplicable(
                f"scores.{name}: standard {name!r} of rubric {rubric.label} does not apply to "
                f"category {category!r} (see its params.{CATEGORIES_KEY}); leave it out"
            )


def grade(
    rubric: Rubric,
    ctx: GradingContext,
    supplied: Mapping[str, float] | None = None,
    *,
    supplied_rationale: str = SUPPLIED,
) -> Grade:
    """Grade one run: each standard that applies to the scenario's category, then
    overall = sum(weight * score) / sum(weight) and passed = overall >= pass_threshold.

    `supplied` (standard -> score) replaces those standards' kinds by the given scores; a name
    that is not an applicable standard raises `NotApplicable`. Raises `GradingUnavailable` when
    a standard cannot be computed (see the module docstring).
    """
    supplied = dict(supplied or {})
    _check_supplied(rubric, ctx.scenario.category, supplied)
    results: list[StandardResult] = []
    for spec in rubric.standards:
        bad_categories: CategoriesError | None = None
        try:
            if not applies_to(spec, ctx.scenario.category):
                continue
        except CategoriesError as err:
            bad_categories = err  # recorded below as this standard's error, like any other
        error: str | None = None
        token = _current_standard.set(spec.name)
        try:
            if spec.name in supplied:
                outcome = StandardOutcome(score=supplied[spec.name], rationale=supplied_rationale)
            else:
                if bad_categories is not None:
                    raise ValueError(f"params.{CATEGORIES_KEY}: {bad_categories}")
                kind, params = kind_params(spec)
                outcome = kind.fn(ctx, params)
            if not isinstance(outcome, StandardOutcome):
                raise TypeError(
                    f"kind {spec.kind!r} returned {type(outcome).__name__}, not StandardOutcome"
                )
        except GradingUnavailable as err:
            # An unknown score is not a 0: the caller records a grading error instead.
            err.standard = err.standard or spec.name
            raise
        except Exception as err:  # one standard's failure must not sink the cell's grading
            error = f"{type(err).__name__}: {err}"
            outcome = StandardOutcome(score=0.0, rationale=f"not graded: {error}")
        finally:
            _current_standard.reset(token)
        results.append(
            StandardResult(
                name=spec.name,
                kind=spec.kind,
                weight=spec.weight,
                threshold=spec.threshold,
                score=outcome.score,
                passed=outcome.score >= spec.threshold,
                rationale=outcome.rationale,
                error=error,
            )
        )
    total = sum(r.weight for r in results)
    score: float | None = None
    passed: bool | None = None
    if total > 0:
        # Rounded so 0.1 + 0.2 style float noise cannot flip a pass at the threshold.
        score = round(sum(r.weight * r.score for r in results) / total, 12)
        passed = score >= rubric.pass_threshold
    return Grade(
        rubric=rubric.name,
        rubric_version=rubric.version,
        standards=results,
        score=score,
        passed=passed,
    )
