"""Grading one output against a rubric: a score per applicable standard and a weighted overall.

This is the one grading function. The cell (`glow.grading.grade_run`, which brings the judge),
`glow regrade` and scores supplied by hand (`invocation_complete`) all grade through it:
`agrade()` from async code, `grade()` from plain code. Both plan the standards and compute the
weighted mean the same way (`_plan`, `_Scoring`, `_grade_of`); they differ only in how a kind
is called.

A kind that fails (a grader bug, params that no longer validate) scores 0 with the error in its
rationale, because one cell's grading must not crash a whole test run. The one exception is
`GradingUnavailable`: a standard whose score cannot be known for an infrastructure reason (its
judge unreachable after retries, answering without a score, refused by the budget, or missing)
stops the grading and propagates, so the caller records a grading error instead of a 0.

Scores supplied by hand go through the same function: a supplied standard takes the given score
instead of running its kind, the others are graded as usual, and the weighted mean and category
filters are the rubric's own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from pydantic import BaseModel, Field

from glow.errors import SpecError
from glow.models import ModelSpec, Rubric, StandardScore, StandardSpec, Status
from glow.threads import GRADING, run_in
from rubrics._context import GradingContext, _current_standard
from rubrics._outcome import StandardOutcome
from rubrics._params import CATEGORIES_KEY, CategoriesError, applies_to, kind_params
from rubrics._registry import StandardKind, UnknownKind, get_kind
from rubrics._unavailable import GradingUnavailable

SUPPLIED = "supplied manually"


class NotApplicable(ValueError):
    """A score was supplied for a standard that is not in the rubric or does not apply to the
    scenario's category (it would not count in the rubric's own mean)."""


class Grade(BaseModel):
    """An invocation's grade: the applicable standards' outcomes and their weighted mean.

    `score` and `passed` are None when no standard applies to the scenario's category (or the
    applicable ones all weigh 0): there is nothing to average, which is not the same as 0.
    Its stored form is one `StandardScore` row per standard (`standard_scores`) and the
    invocation's fields (`invocation_fields`).
    """

    rubric: str
    rubric_version: str
    standards: list[StandardOutcome]
    score: float | None = Field(None, ge=0, le=1)
    passed: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.rubric}@{self.rubric_version}"

    @property
    def scores(self) -> dict[str, float]:
        """Standard name -> score, the shape of `Invocation.scores`."""
        return {str(r.name): r.score for r in self.standards}

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
                standard=str(r.name),
                kind=str(r.kind),
                weight=float(r.weight or 0.0),
                score=r.score,
                passed=bool(r.passed),
                rationale=r.rationale,
            )
            for r in self.standards
        ]

    def invocation_fields(self) -> dict[str, Any]:
        """The invocation's result fields this grade sets (status completed, no error)."""
        return {
            "status": Status.completed,
            "error_type": None,
            "error_message": None,
            "scores": self.scores,
            "score": self.score,
            "passed": self.passed,
            "rubric": self.label,
        }


def judged_standards(rubric: Rubric) -> list[StandardSpec]:
    """The rubric's standards whose kind calls the judge model (`needs_judge`): a test with
    any of them needs a `judge:`. A kind nobody registered is left to the loader to report."""
    judged = []
    for spec in rubric.standards:
        try:
            if get_kind(spec.kind).needs_judge:
                judged.append(spec)
        except UnknownKind:
            continue
    return judged


def require_judge(rubric: Rubric, judge: ModelSpec | None, where: str) -> None:
    """SpecError naming `where` when the rubric has standards that call a judge model and the
    test names none (`judge` is None): checked before any model is called."""
    judged = judged_standards(rubric)
    if judge is None and judged:
        kinds = ", ".join(sorted({f"{s.name} ({s.kind})" for s in judged}))
        raise SpecError(
            f"{where}: rubric {rubric.label} has standards that call a judge model ({kinds}); "
            "add a `judge:` model to the test"
        )


def graded_categories(rubric: Rubric, categories: Iterable[str | None]) -> set[str]:
    """Those of `categories` that at least one weighted standard of the rubric grades: a failed
    invocation of any other category would get no score, so it is not counted as 0."""

    def graded(category: str) -> bool:
        for standard in rubric.standards:
            try:
                if standard.weight > 0 and applies_to(standard, category):
                    return True
            except CategoriesError:
                return True  # graded, with the error, by grade()
        return False

    return {c for c in categories if c is not None and graded(c)}


# --------------------------------------------------------------------------- the shared rule


@dataclass(frozen=True)
class _Step:
    """One applicable standard, and how it is scored: a supplied score, or its kind."""

    spec: StandardSpec
    supplied: float | None = None
    kind: StandardKind | None = None
    params: BaseModel | None = None
    error: Exception | None = None  # raised when scored: recorded as the standard's error


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


def _plan(rubric: Rubric, category: str, supplied: Mapping[str, float] | None) -> list[_Step]:
    """The standards that apply to `category`, in the rubric's order."""
    supplied = dict(supplied or {})
    _check_supplied(rubric, category, supplied)
    steps: list[_Step] = []
    for spec in rubric.standards:
        try:
            if not applies_to(spec, category):
                continue
        except CategoriesError as err:  # recorded as this standard's error, like any other
            if spec.name not in supplied:
                steps.append(_Step(spec, error=ValueError(f"params.{CATEGORIES_KEY}: {err}")))
                continue
        if spec.name in supplied:
            steps.append(_Step(spec, supplied=supplied[spec.name]))
            continue
        try:
            kind, params = kind_params(spec)
        except Exception as err:  # params that no longer validate: this standard's error
            steps.append(_Step(spec, error=err))
            continue
        steps.append(_Step(spec, kind=kind, params=params))
    return steps


class _Scoring:
    """Around one standard's scoring: names the standard (`current_standard()`), turns a
    failing kind into a 0 with its error, lets `GradingUnavailable` through, and completes the
    outcome with the standard it belongs to."""

    def __init__(self, step: _Step, supplied_rationale: str) -> None:
        self.step = step
        self.outcome: StandardOutcome | None = None
        if step.supplied is not None:
            self.outcome = StandardOutcome(score=step.supplied, rationale=supplied_rationale)
        self._error: str | None = None

    def __enter__(self) -> _Scoring:
        self._token = _current_standard.set(self.step.spec.name)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        _current_standard.reset(self._token)
        if isinstance(err, GradingUnavailable):
            # An unknown score is not a 0: the caller records a grading error instead.
            err.standard = err.standard or self.step.spec.name
            return False
        if isinstance(err, Exception):  # one standard's failure must not sink the grading
            self._error = f"{type(err).__name__}: {err}"
            self.outcome = StandardOutcome(score=0.0, rationale=f"not graded: {self._error}")
            return True
        return False

    @property
    def needs_kind(self) -> bool:
        """Whether the kind must still be called (no supplied score); raises a planned error."""
        if self.outcome is not None:
            return False
        if self.step.error is not None:
            raise self.step.error
        return True

    def took(self, outcome: Any) -> None:
        """The kind's return value."""
        if not isinstance(outcome, StandardOutcome):
            raise TypeError(
                f"kind {self.step.spec.kind!r} returned {type(outcome).__name__}, "
                "not StandardOutcome"
            )
        self.outcome = outcome

    def result(self) -> StandardOutcome:
        spec = self.step.spec
        assert self.outcome is not None
        return self.outcome.model_copy(
            update={
                "name": spec.name,
                "kind": spec.kind,
                "weight": spec.weight,
                "threshold": spec.threshold,
                "error": self._error,
            }
        )


def _grade_of(rubric: Rubric, outcomes: list[StandardOutcome]) -> Grade:
    """overall = sum(weight * score) / sum(weight); passed = overall >= pass_threshold."""
    total = sum(r.weight or 0.0 for r in outcomes)
    score: float | None = None
    passed: bool | None = None
    if total > 0:
        # Rounded so 0.1 + 0.2 style float noise cannot flip a pass at the threshold.
        score = round(sum((r.weight or 0.0) * r.score for r in outcomes) / total, 12)
        passed = score >= rubric.pass_threshold
    return Grade(
        rubric=rubric.name,
        rubric_version=rubric.version,
        standards=outcomes,
        score=score,
        passed=passed,
    )


# --------------------------------------------------------------------------- the two callers


def grade(
    rubric: Rubric,
    ctx: GradingContext,
    supplied: Mapping[str, float] | None = None,
    *,
    supplied_rationale: str = SUPPLIED,
) -> Grade:
    """Grade one output from plain (non-async) code: each standard that applies to the
    scenario's category, then overall = sum(weight * score) / sum(weight) and
    passed = overall >= pass_threshold.

    `supplied` (standard -> score) replaces those standards' kinds by the given scores; a name
    that is not an applicable standard raises `NotApplicable`. Raises `GradingUnavailable` when
    a standard cannot be computed (see the module docstring). Kinds run in the calling thread;
    an `async def` kind runs to completion on an event loop of its own, so this cannot be
    called from a running loop's thread: use `agrade` there.
    """
    outcomes: list[StandardOutcome] = []
    for step in _plan(rubric, ctx.scenario.category, supplied):
        with _Scoring(step, supplied_rationale) as scoring:
            if scoring.needs_kind:
                assert step.kind is not None
                result = step.kind.fn(ctx, step.params)
                if inspect.isawaitable(result):
                    result = _run_to_end(result)
                scoring.took(result)
        outcomes.append(scoring.result())
    return _grade_of(rubric, outcomes)


async def agrade(
    rubric: Rubric,
    ctx: GradingContext,
    supplied: Mapping[str, float] | None = None,
    *,
    supplied_rationale: str = SUPPLIED,
) -> Grade:
    """`grade()` from async code, without blocking the event loop.

    An `async def` kind is awaited here (its judge call too, when `ctx.call_judge` is async: no
    thread hop); a sync kind that is `blocking` or `needs_judge` runs on the GRADING worker
    pool (a sync judge kind's calls to an async transport come back to this loop); the other
    sync kinds are quick and run inline.
    """
    loop = asyncio.get_running_loop()
    outcomes: list[StandardOutcome] = []
    for step in _plan(rubric, ctx.scenario.category, supplied):
        with _Scoring(step, supplied_rationale) as scoring:
            if scoring.needs_kind:
                kind = step.kind
                assert kind is not None
                if kind.is_async:
                    result = await kind.fn(ctx, step.params)  # type: ignore[misc]
                elif kind.blocking or kind.needs_judge:
                    result = await run_in(GRADING, kind.fn, _off_loop(ctx, loop), step.params)
                else:
                    result = kind.fn(ctx, step.params)
                scoring.took(result)
        outcomes.append(scoring.result())
    return _grade_of(rubric, outcomes)


def _run_to_end(awaitable: Any) -> Any:
    """Run an async kind's coroutine from plain code (no loop may be running in this thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def wait() -> Any:
            return await awaitable

        return asyncio.run(wait())
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never awaited: closed so Python does not warn about it
    raise RuntimeError(
        "rubrics.grade() was called on a running event loop's thread and the rubric has an "
        "async standard kind; await rubrics.agrade() there instead"
    )


def _off_loop(ctx: GradingContext, loop: asyncio.AbstractEventLoop) -> GradingContext:
    """`ctx` for a sync kind on a worker thread: an async judge transport is called back on
    `loop` and waited for, so the kind sees a plain function returning the reply."""
    call_judge = ctx.call_judge
    if call_judge is None:
        return ctx

    def bridged(messages: list[dict[str, Any]]) -> str:
        reply = call_judge(messages)
        if inspect.iscoroutine(reply):
            return asyncio.run_coroutine_threadsafe(reply, loop).result()
        return reply  # type: ignore[return-value]

    return replace(ctx, call_judge=bridged)
