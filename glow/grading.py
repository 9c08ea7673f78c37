"""Grading in the engine: the rubric's grade with a real judge, its cost and its trace.

`rubrics.agrade` is the one grading function; this module brings what rubrics leave to their
caller: the judge model reached through litellm (`glow.llm`), each judge call recorded as a
`Generation` (paid for, so kept even when the cell is cancelled) and as grading trace events,
and the store writes of a grading pass over a recorded output (`regrade_invocation`, what
`glow regrade` runs per invocation).

Grading errors are errors: a standard that cannot be computed for an infrastructure reason (the
judge unreachable after retries, its reply without a score after retries, the budget spent
when it is called) raises `GradingFailed` with the error type `judge_error` or
`judge_budget_exhausted` (`glow.models.GRADING_ERRORS`) and the judge calls already paid for,
never a 0. Only the judge's transport is retried, never the model under test.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from glow.errors import BudgetExhausted
from glow.llm import CallOptions, ModelCallError, acall_model
from glow.models import (
    GRADING_ERRORS,
    JUDGE_BUDGET_EXHAUSTED,
    Generation,
    Invocation,
    ModelSpec,
    Rubric,
    Scenario,
    StandardScore,
    Status,
    TraceEvent,
    known_sum,
)
from glow.store import Store
from glow.threads import STORE, run_in
from rubrics import (
    Grade,
    GradingContext,
    GradingUnavailable,
    agrade,
    current_standard,
)
from rubrics.kinds import JudgeUnavailable

GRADED_AGAIN = "graded again"  # the note opening a run that grades a recorded output


class GradingFailed(Exception):
    """A grading pass that could not compute a standard: the invocation fails with
    `error_type` (one of GRADING_ERRORS), keeping the judge calls' events and generations."""

    def __init__(
        self,
        error_type: str,
        message: str,
        events: list[TraceEvent],
        generations: list[Generation],
    ) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.events = events
        self.generations = generations


def model_events(trace: list[TraceEvent]) -> list[TraceEvent]:
    """The model-side events of a recorded run (its calls, tool calls, errors of the model),
    without earlier grading: what a grading pass over that run's output looks at."""
    return [
        e
        for e in trace
        if e.kind != "grading"
        and not (e.kind == "error" and e.error_type in GRADING_ERRORS)
        and not (e.kind == "note" and e.name == GRADED_AGAIN)
    ]


@dataclass
class RecordedGrade:
    """A `Grade` as recorded against one run: its store rows (`scores`, one grading id), and
    the judge calls it made (`events` for the run's trace, `generations` for the ledger)."""

    grade: Grade
    scores: list[StandardScore]
    events: list[TraceEvent] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        return self.grade.score

    @property
    def passed(self) -> bool | None:
        return self.grade.passed

    @property
    def per_standard(self) -> dict[str, float]:
        """Standard name -> score, the shape of `Invocation.scores`."""
        return self.grade.scores

    @property
    def judge_cost_usd(self) -> float | None:
        return known_sum(g.cost_usd for g in self.generations)


async def grade_run(
    *,
    rubric: Rubric,
    scenario: Scenario,
    output: str | None,
    trace: list[TraceEvent],
    test_id: str,
    invocation_id: str,
    run_id: str,
    judge: ModelSpec | None,
    options: CallOptions | None = None,
    paid: list[Generation] | None = None,
) -> RecordedGrade:
    """Grade one run's output with `rubrics.agrade`, calling the judge (if any) through litellm
    on this event loop and recording its cost and trace.

    Each judge generation is also appended to `paid` as soon as it is paid for, so a caller
    cancelled mid-grading still records it. Raises `GradingFailed` (see the module docstring).
    """
    events: list[TraceEvent] = []
    generations: list[Generation] = []

    async def ask_judge(messages: list[dict[str, Any]]) -> str:
        if judge is None:
            raise JudgeUnavailable("this rubric needs a judge model; add `judge:` to the test")
        standard = current_standard()
        try:
            reply = await acall_model(judge, messages, options=options)
        except ModelCallError as exc:
            for event in exc.events:
                event.kind = "grading"
            events.extend(exc.events)
            raise GradingUnavailable(
                f"the judge call failed after {len(exc.events)} attempt(s): "
                f"{exc.error_type}: {exc.message}"
            ) from None
        except BudgetExhausted as exc:
            raise GradingUnavailable(
                f"the judge call was refused: {exc}", error_type=JUDGE_BUDGET_EXHAUSTED
            ) from None
        for event in reply.events:
            event.kind = "grading"
            event.name = f"{standard}: {judge.name}" if standard else judge.name
        events.extend(reply.events)
        generation = reply.generation(
            judge,
            test_id=test_id,
            invocation_id=invocation_id,
            run_id=run_id,
            role="judge",
            standard=standard,
        )
        generations.append(generation)
        if paid is not None:
            paid.append(generation)
        return reply.text

    ctx = GradingContext(
        scenario=scenario,
        output=output,
        trace=trace,
        call_judge=ask_judge,
        judge_retries=options.max_retries if options is not None else 2,
    )
    try:
        result = await agrade(rubric, ctx)
    except GradingUnavailable as err:
        who = f", judge {judge.name} ({judge.model})" if judge is not None else ""
        message = f"standard {err.standard!r}{who}: {err.message}"[:2000]
        events.append(
            TraceEvent(
                kind="grading",
                name=rubric.label,
                error_type=err.error_type,
                error_message=message,
            )
        )
        raise GradingFailed(err.error_type, message, events, generations) from None
    events.append(
        TraceEvent(
            kind="grading",
            name=rubric.label,
            content={
                "score": result.score,
                "passed": result.passed,
                "standards": {
                    s.name: {"score": s.score, "passed": s.passed, "why": s.rationale}
                    for s in result.standards
                },
            },
        )
    )
    rows = result.standard_scores(
        invocation_id=invocation_id, run_id=run_id, grading_id=str(uuid.uuid4())
    )
    return RecordedGrade(grade=result, scores=rows, events=events, generations=generations)


def regrade_targets(store: Store, test_id: str) -> list[Invocation]:
    """What `glow regrade` grades: every completed invocation, and every one that failed in
    grading (GRADING_ERRORS), its output kept."""
    return store.list_invocations(test_id, status=Status.completed) + [
        inv
        for inv in store.list_invocations(test_id, status=Status.failed)
        if inv.error_type in GRADING_ERRORS
    ]


async def regrade_invocation(
    store: Store,
    inv: Invocation,
    *,
    rubric: Rubric,
    scenario: Scenario,
    judge: ModelSpec | None,
    options: CallOptions | None,
) -> Status:
    """Grade an invocation's recorded output again with `rubric`; no model under test is called.

    Earlier score rows stay; the new ones carry the rubric's name and version, and the
    invocation shows the latest grading. If the grading fails (judge unreachable...), the
    invocation ends `failed` with that error type and no score, its output kept. Returns the
    status written.
    """
    runs = (await run_in(STORE, store.get_invocation, inv.invocation_id)).runs
    # The run that produced the invocation's output (a later manual completion may have
    # supplied none of its own).
    run = next((r for r in reversed(runs) if r.output is not None), runs[-1])
    rows: list[StandardScore] = []
    try:
        graded = await grade_run(
            rubric=rubric,
            scenario=scenario,
            output=inv.output,
            trace=model_events(run.trace),
            test_id=inv.test_id,
            invocation_id=inv.invocation_id,
            run_id=run.run_id,
            judge=judge,
            options=options,
        )
    except GradingFailed as failed:
        generations = failed.generations
        values: dict[str, Any] = {
            "status": Status.failed,
            "error_type": failed.error_type,
            "error_message": failed.message,
            "scores": {},
            "score": None,
            "passed": None,
            "rubric": rubric.label,
        }
    else:
        generations, rows, values = (
            graded.generations,
            graded.scores,
            graded.grade.invocation_fields(),
        )
    await run_in(STORE, store.add_generations, generations)
    judge_cost = known_sum(await run_in(STORE, store.judge_cost, inv.invocation_id))
    values.update(judge_cost_usd=judge_cost, cost_usd=known_sum([inv.model_cost_usd, judge_cost]))
    # One conditional write: a re-run that finished meanwhile keeps its own grading.
    await run_in(
        STORE, store.record_grading, inv.invocation_id, rows, values, run_number=runs[-1].number
    )
    return values["status"]
