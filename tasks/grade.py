"""Grade one run's output against the test's rubric: a score per standard, weighted overall.

Used by `run-invocation` right after the model answers, and by `glow regrade` on recorded traces
(no model is called again, only the judge when the rubric has llm_judge standards).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glow import eventloop
from glow.errors import SpecError
from glow.llm import CallOptions, ModelCallError, acall_model
from glow.models import (
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
from rubrics import GradingContext, applies_to, current_standard, grade, load_rubric

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
) -> GradingResult:
    """Grade, calling the judge (if any) through litellm and recording its cost and trace.

    Standard kinds are plain functions. When a judge may be needed, grading runs in a worker
    thread and the judge's calls are sent back to this event loop, so the loop never blocks.
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
        generations.append(
            Generation(
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
        )
        return reply.text

    def call_judge(messages: list[dict[str, Any]]) -> str:
        if judge is None:
            raise RuntimeError("this rubric needs a judge model; add `judge:` to the test")
        future = asyncio.run_coroutine_threadsafe(ask_judge(messages, current_standard()), loop)
        return future.result()

    ctx = GradingContext(scenario=scenario, output=output, trace=trace, call_judge=call_judge)
    blocking = any(
        s.kind in OFF_LOOP_KINDS and applies_to(s, scenario.category) for s in rubric.standards
    )
    if blocking:
        # grading blocks on the judge call it hands back to this loop, or on a regex or python
        # grader for up to its time limit: never on this loop, never on litellm's executor
        result = await run_in(GRADING, grade, rubric, ctx)
    else:
        result = grade(rubric, ctx)
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
    """Grade every completed invocation's latest recorded run again with another rubric.

    No model under test is called. Earlier score rows stay; the new ones carry the new rubric's
    name and version, and the invocation and test now show the latest grading.
    """
    from tasks.run_invocation import context_for

    ctx = context_for(test_id, store)
    rubric = load_rubric(rubric_ref, base_dir=ctx.loaded.base_dir)
    judge = ctx.loaded.spec.judge
    if judge is None and any(s.kind == "llm_judge" for s in rubric.standards):
        raise SpecError(
            f"rubric {rubric.label} has llm_judge standards but test {test_id} has no judge model"
        )
    completed = store.list_invocations(test_id, status=Status.completed)
    options = ctx.options(judge) if judge else None
    for done, inv in enumerate(completed, start=1):
        run = store.get_invocation(inv.invocation_id).runs[-1]
        result = await grade_run(
            rubric=rubric,
            scenario=ctx.scenarios[inv.scenario_id],
            output=run.output,
            trace=run.trace,
            test_id=test_id,
            invocation_id=inv.invocation_id,
            run_id=run.run_id,
            judge=judge,
            options=options,
        )
        store.add_generations(result.generations)
        judge_cost = known_sum(store.judge_cost(inv.invocation_id))
        store.record_grading(
            inv.invocation_id,
            result.scores,
            {
                "scores": result.per_standard,
                "score": result.score,
                "passed": result.passed,
                "rubric": rubric.label,
                "judge_cost_usd": judge_cost,
                "cost_usd": known_sum([inv.model_cost_usd, judge_cost]),
            },
        )
        if on_progress:
            on_progress(done, len(completed))
    store.update_test(test_id, rubric=rubric)
    ctx.loaded.rubric = rubric
    return len(completed)


def regrade_test(
    store: Store,
    test_id: str,
    rubric_ref: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """`aregrade_test` for synchronous callers (the CLI)."""
    return eventloop.run(aregrade_test(store, test_id, rubric_ref, on_progress=on_progress))
