"""Grade one run's output against the test's rubric: a score per standard, weighted overall.

Used by `run-invocation` right after the model answers, and by `glow regrade` on recorded traces
(no model is called again, only the judge when the rubric has llm_judge standards).

Grading errors are errors: a standard that cannot be computed for an infrastructure reason (the
judge unreachable after retries, its reply without a score after retries, the budget spent
when it is called) raises `GradingFailed` with the error type `judge_error` or
`judge_budget_exhausted` (`glow.models.GRADING_ERRORS`) and the judge calls already paid for,
never a 0. Only the judge's transport is retried, never the model under test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glow import eventloop
from glow.errors import BudgetExhausted, SpecError
from glow.llm import CallOptions, ModelCallError, acall_model
from glow.models import (
    GRADING_ERRORS,
    JUDGE_BUDGET_EXHAUSTED,
    Generation,
    ModelSpec,
    Rubric,
    Scenario,
    StandardScore,
    Status,
    TraceEvent,
    known_sum,
)
from glow.store import Store
from glow.threads import GRADING, run_in
from rubrics import (
    GradingContext,
    GradingUnavailable,
    applies_to,
    current_standard,
    grade,
    load_rubric,
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


# Kinds that may block for a while (a judge call, a regex or python grader up to its time limit):
# graded on a worker thread so the loop, and every other cell on it, keeps going.
OFF_LOOP_KINDS = frozenset({"llm_judge", "regex", "python"})


@dataclass
class GradingResult:
    """Everything a grading pass produced, ready for the store."""

    scores: list[StandardScore]
    score: float | None
    passed: bool | None
    per_standard: dict[str, float]
    events: list[TraceEvent] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)

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
) -> GradingResult:
    """Grade, calling the judge (if any) through litellm and recording its cost and trace.

    Standard kinds are plain functions. When a judge may be needed, grading runs in a worker
    thread and the judge's calls are sent back to this event loop, so the loop never blocks.
    Each judge generation is also appended to `paid` as soon as it is paid for, so a caller
    cancelled mid-grading still records it. Raises `GradingFailed` (see the module docstring).
    """
    events: list[TraceEvent] = []
    generations: list[Generation] = []
    loop = asyncio.get_running_loop()

    async def ask_judge(messages: list[dict[str, Any]], standard: str | None) -> str:
        assert judge is not None
        try:
            reply = await acall_model(judge, messages, options=options)
        except ModelCallError as exc:
            for event in exc.events:
                event.kind = "grading"
            events.extend(exc.events)
            raise
        for event in reply.events:
            event.kind = "grading"
            event.name = f"{standard}: {judge.name}" if standard else judge.name
        events.extend(reply.events)
        generation = Generation(
            test_id=test_id,
            invocation_id=invocation_id,
            run_id=run_id,
            role="judge",
            model=judge.name,
            litellm_model=judge.model,
            provider=judge.provider,
            standard=standard,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=reply.cost_usd,
            latency_s=reply.latency_s,
        )
        generations.append(generation)
        if paid is not None:
            paid.append(generation)
        return reply.text

    def call_judge(messages: list[dict[str, Any]]) -> str:
        if judge is None:
            raise JudgeUnavailable("this rubric needs a judge model; add `judge:` to the test")
        future = asyncio.run_coroutine_threadsafe(ask_judge(messages, current_standard()), loop)
        try:
            return future.result()
        except ModelCallError as exc:
            raise GradingUnavailable(
                f"the judge call failed after {len(exc.events)} attempt(s): "
                f"{exc.error_type}: {exc.message}"
            ) from None
        except BudgetExhausted as exc:
            raise GradingUnavailable(
                f"the judge call was refused: {exc}", error_type=JUDGE_BUDGET_EXHAUSTED
            ) from None

    ctx = GradingContext(
        scenario=scenario,
        output=output,
        trace=trace,
        call_judge=call_judge,
        judge_retries=options.max_retries if options is not None else 2,
    )
    blocking = any(
        s.kind in OFF_LOOP_KINDS and applies_to(s, scenario.category) for s in rubric.standards
    )
    try:
        if blocking:
            # grading blocks on the judge call it hands back to this loop, or on a regex or python
            # grader for up to its time limit: never on this loop, never on litellm's executor
            result = await run_in(GRADING, grade, rubric, ctx)
        else:
            result = grade(rubric, ctx)
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
    scores = result.standard_scores(
        invocation_id=invocation_id, run_id=run_id, grading_id=str(uuid.uuid4())
    )
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
    return GradingResult(
        scores=scores,
        score=result.score,
        passed=result.passed,
        per_standard=result.scores,
        events=events,
        generations=generations,
    )


async def aregrade_test(
    store: Store,
    test_id: str,
    rubric_ref: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Grade every completed invocation's recorded output again with another rubric, and every
    invocation that failed in grading (GRADING_ERRORS); return how many were graded.

    No model under test is called. Earlier score rows stay; the new ones carry the new rubric's
    name and version, and the invocation and test now show the latest grading. An invocation
    whose grading fails (judge unreachable...) ends `failed` with that error type and no score,
    its output kept: `glow regrade` or `glow run --resume` grades it again later.
    """
    from tasks.run_invocation import context_for

    ctx = context_for(test_id, store)
    rubric = load_rubric(rubric_ref, base_dir=ctx.loaded.base_dir)
    judge = ctx.loaded.spec.judge
    if judge is None and any(s.kind == "llm_judge" for s in rubric.standards):
        raise SpecError(
            f"rubric {rubric.label} has llm_judge standards but test {test_id} has no judge model"
        )
    targets = store.list_invocations(test_id, status=Status.completed) + [
        inv
        for inv in store.list_invocations(test_id, status=Status.failed)
        if inv.error_type in GRADING_ERRORS
    ]
    options = ctx.options(judge) if judge else None
    for done, inv in enumerate(targets, start=1):
        runs = store.get_invocation(inv.invocation_id).runs
        # The run that produced the invocation's output (a later manual completion may have
        # supplied none of its own).
        run = next((r for r in reversed(runs) if r.output is not None), runs[-1])
        try:
            result = await grade_run(
                rubric=rubric,
                scenario=ctx.scenarios[inv.scenario_id],
                output=inv.output,
                trace=model_events(run.trace),
                test_id=test_id,
                invocation_id=inv.invocation_id,
                run_id=run.run_id,
                judge=judge,
                options=options,
            )
        except GradingFailed as failed:
            store.add_generations(failed.generations)
            judge_cost = known_sum(store.judge_cost(inv.invocation_id))
            store.record_grading(
                inv.invocation_id,
                [],
                {
                    "status": Status.failed,
                    "error_type": failed.error_type,
                    "error_message": failed.message,
                    "scores": {},
                    "score": None,
                    "passed": None,
                    "rubric": rubric.label,
                    "judge_cost_usd": judge_cost,
                    "cost_usd": known_sum([inv.model_cost_usd, judge_cost]),
                },
                # one conditional write: a re-run that finished meanwhile keeps its own grading
                run_number=runs[-1].number,
            )
        else:
            store.add_generations(result.generations)
            judge_cost = known_sum(store.judge_cost(inv.invocation_id))
            store.record_grading(
                inv.invocation_id,
                result.scores,
                {
                    "status": Status.completed,
                    "error_type": None,
                    "error_message": None,
                    "scores": result.per_standard,
                    "score": result.score,
                    "passed": result.passed,
                    "rubric": rubric.label,
                    "judge_cost_usd": judge_cost,
                    "cost_usd": known_sum([inv.model_cost_usd, judge_cost]),
                },
                # one conditional write: a re-run that finished meanwhile keeps its own grading
                run_number=runs[-1].number,
            )
        if on_progress:
            on_progress(done, len(targets))
    store.update_test(test_id, rubric=rubric)
    ctx.loaded.rubric = rubric
    return len(targets)


def regrade_test(
    store: Store,
    test_id: str,
    rubric_ref: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """`aregrade_test` for synchronous callers (the CLI)."""
    return eventloop.run(aregrade_test(store, test_id, rubric_ref, on_progress=on_progress))
