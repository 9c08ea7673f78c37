"""Executing one cell: a new run of its invocation, start to end.

`execute_cell` marks the invocation running (a new run), drives the model (one call, or the
agent loop with tool calls up to `max_turns`), records the trace, grades it and writes
everything in one transaction. Errors end the invocation `failed` with the error kept; they
never raise, so one bad cell never stops a benchmark. A terminated invocation (or a cancelled
test) abandons its in-flight call at once: the cell's asyncio task is cancelled, its partial
trace is kept and a late answer is discarded.

A cell that failed in grading (`glow.models.GRADING_ERRORS`: its judge was unreachable, answered
without a score, or was refused by the budget) is not run again: its new run copies the recorded
run's model events, notes which run it grades, and grades that recorded output, so the model
under test is not called. The run-test flow knows these cells from the store
(`glow.planning.grading_failed`); a run the API opened (`invocation_run`) grades again when the
run before it failed in grading.

This is plain async Python: the `run-invocation` task (tasks/run_invocation.py) wraps it for
the flows, and the API and tests can execute a cell without a flow. All cells of a process share
one event loop rather than a thread per in-flight call.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from glow import cancel
from glow.context import TestContext
from glow.grading import GRADED_AGAIN, GradingFailed, grade_run, model_events
from glow.llm import ModelCallError, acall_model
from glow.models import (
    GRADING_ERRORS,
    AgentSpec,
    Cell,
    Generation,
    Invocation,
    ModelSpec,
    Run,
    Status,
    TraceEvent,
    known_sum,
    utcnow,
)
from glow.planning import invocation_for
from glow.secrets import redact
from glow.store import RUNNABLE, Store
from glow.threads import STORE, run_in
from glow.trace import scenario_messages, tool_schema


async def agent_loop(
    ctx: TestContext,
    model: ModelSpec,
    agent: AgentSpec,
    messages: list[dict[str, Any]],
    run: Run,
    generations: list[Generation],
    test_id: str,
) -> str:
    """Call the model, run the tools it asks for, repeat up to max_turns; return the answer."""
    tools = {ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1]: ctx.tool(ref) for ref in agent.tools}
    schemas = [tool_schema(fn) for fn in tools.values()] or None
    options = ctx.options(model)
    answer = ""
    for turn in range(1, agent.max_turns + 1):
        reply = await acall_model(model, messages, tools=schemas, options=options)
        run.trace.extend(reply.events)
        generations.append(
            reply.generation(
                model, test_id=test_id, invocation_id=run.invocation_id, run_id=run.run_id
            )
        )
        answer = reply.text
        if not reply.tool_calls or turn == agent.max_turns:
            break
        messages = [*messages, reply.message]
        for call in reply.tool_calls:
            name = call["function"]["name"]
            run.trace.append(TraceEvent(kind="tool_call", name=name, content=call["function"]))
            try:
                arguments = json.loads(call["function"].get("arguments") or "{}")
                result = str(tools[name](**arguments))
            except Exception as exc:  # noqa: BLE001 - a tool error goes back to the model
                result = redact(f"error: {type(exc).__name__}: {exc}")  # goes to the provider
            run.trace.append(TraceEvent(kind="tool_result", name=name, content=result))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    return answer


def _recorded_run(
    store: Store, invocation_id: str, before: int, *, after_grading_error: bool
) -> tuple[Invocation, Run] | None:
    """The invocation as stored and its latest run before run `before` that has an output (the
    output to grade again); with `after_grading_error`, only if that run failed in grading."""
    stored = store.get_invocation(invocation_id, runs=True, trace=True)
    earlier = [r for r in stored.runs if r.number < before]
    if not earlier:
        return None
    if after_grading_error and not (
        earlier[-1].status is Status.failed and earlier[-1].error_type in GRADING_ERRORS
    ):
        return None
    source = next((r for r in reversed(earlier) if r.output is not None), None)
    return None if source is None else (stored, source)


async def execute_cell(
    ctx: TestContext,
    cell: Cell | str,
    *,
    allowed: frozenset[Status] = RUNNABLE,
    run: Run | None = None,
    grade_only: bool | None = None,
) -> tuple[Invocation, Run]:
    """Run one invocation to its end; return it as stored, with the run just made.

    `run` is a run already opened with `start_run` (the API opens it, so it can answer with the
    run id or a 409 at once); without it a new run is opened here. `grade_only` grades the
    latest recorded output again instead of calling the model; None decides it: a cell of
    `ctx.grade_only` when the run is opened here, else when the run before `run` failed in
    grading. Without a recorded output the model is called as usual.
    """
    if isinstance(cell, str):
        stored = await run_in(STORE, ctx.store.get_invocation, cell, runs=False)
        cell = Cell.of(stored)
    inv = invocation_for(cell, ctx.loaded)
    scenario = ctx.scenarios[cell.scenario_id]
    model, agent, spec = ctx.models[cell.model], ctx.agents[cell.agent], ctx.loaded.spec
    if run is None:
        if grade_only is None:
            grade_only = inv.invocation_id in ctx.grade_only
        run = await run_in(
            STORE,
            ctx.store.start_run,
            inv.invocation_id,
            allowed=allowed,
            owner=cancel.OWNER,
            lease_s=cancel.LEASE_S,
        )
    ctx.grade_only.discard(inv.invocation_id)
    recorded: tuple[Invocation, Run] | None = None
    if grade_only is not False and run.number > 1:
        recorded = await run_in(
            STORE,
            _recorded_run,
            ctx.store,
            inv.invocation_id,
            run.number,
            after_grading_error=grade_only is None,
        )
    started = time.perf_counter()
    generations: list[Generation] = []
    error: tuple[str, str] | None = None
    output: str | None = None
    terminated = test_cancelled = False
    values: dict[str, Any] = {}
    scores = []
    with cancel.track(inv.invocation_id, ctx.store) as tracked:
        try:
            if recorded is not None:
                source = recorded[1]
                output = source.output
                graded_trace = model_events(source.trace)
                run.trace.append(
                    TraceEvent(
                        kind="note",
                        name=GRADED_AGAIN,
                        content={
                            "graded_run_id": source.run_id,
                            "graded_run": source.number,
                            "why": f"run {source.number} ended {source.error_type or 'ungraded'}"
                            "; its recorded output is graded again and the model under test is "
                            "not called (its events below are copied from that run)",
                        },
                    )
                )
                run.trace.extend(graded_trace)
            else:
                messages = scenario_messages(scenario, agent, ctx.loaded.base_dir)
                output = await agent_loop(
                    ctx, model, agent, messages, run, generations, cell.test_id
                )
                graded_trace = run.trace
            grading = await grade_run(
                rubric=ctx.loaded.rubric,
                scenario=scenario,
                output=output,
                trace=graded_trace,
                test_id=cell.test_id,
                invocation_id=inv.invocation_id,
                run_id=run.run_id,
                judge=spec.judge,
                options=ctx.options(spec.judge) if spec.judge else None,
                paid=generations,
            )
            run.trace.extend(grading.events)
            scores = grading.scores
            values.update(
                status=Status.completed,
                scores=grading.per_standard,
                score=grading.score,
                passed=grading.passed,
                rubric=ctx.loaded.rubric.label,
            )
        except asyncio.CancelledError:
            # Terminated through the API, or the test was cancelled: the call is abandoned,
            # what was recorded so far is kept, and whatever answer arrives later is dropped.
            terminated = True
            if tracked.terminated:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                error = ("Terminated", "the invocation was terminated while it ran")
            else:
                test_cancelled = True
                error = ("Cancelled", "the test was cancelled while this invocation ran")
        except ModelCallError as exc:
            run.trace.extend(exc.events)
            error = (exc.error_type, exc.message)
        except GradingFailed as exc:
            # The model answered; its output is kept and graded again later (no score now).
            run.trace.extend(exc.events)
            error = (exc.error_type, exc.message)
        except Exception as exc:  # noqa: BLE001 - any failure ends the cell failed, with its reason
            error = (type(exc).__name__, str(exc)[:2000])
    if error is not None:
        error = (error[0], redact(error[1]))  # a tool's or a grader's error may echo a key too
        run.trace.append(TraceEvent(kind="error", error_type=error[0], error_message=error[1]))
        values.update(
            status=Status.terminated if terminated else Status.failed,
            error_type=error[0],
            error_message=error[1],
        )
    judge_cost = known_sum(g.cost_usd for g in generations if g.role == "judge")
    values.update(
        output=output,
        latency_s=time.perf_counter() - started,
        finished_at=utcnow(),
        input_tokens=sum(g.input_tokens for g in generations if g.role == "model"),
        output_tokens=sum(g.output_tokens for g in generations if g.role == "model"),
        model_cost_usd=known_sum(g.cost_usd for g in generations if g.role == "model"),
        judge_cost_usd=judge_cost,
    )
    if recorded is not None:
        # The graded output's model call happened in an earlier run: its usage, cost and
        # latency stay the invocation's; the judge's cost adds up over the grading passes.
        stored = recorded[0]
        values.update(
            latency_s=stored.latency_s,
            input_tokens=stored.input_tokens,
            output_tokens=stored.output_tokens,
            model_cost_usd=stored.model_cost_usd,
            judge_cost_usd=known_sum([stored.judge_cost_usd, judge_cost]),
        )
    values["cost_usd"] = known_sum([values["model_cost_usd"], values["judge_cost_usd"]])
    run.status = values["status"]
    run.finished_at = values["finished_at"]
    run.output = output
    run.error_type, run.error_message = error if error else (None, None)
    final = await run_in(
        STORE, ctx.store.finish_run, run, invocation=values, generations=generations, scores=scores
    )
    inv = inv.model_copy(
        update={**values, "status": final, "attempts": run.number, "started_at": run.started_at}
    )
    if final is not values["status"] or run.status is not values["status"]:
        # Terminated (or completed by another run) meanwhile: the late result was discarded.
        inv = await run_in(STORE, ctx.store.get_invocation, inv.invocation_id, runs=False)
    if test_cancelled:
        raise asyncio.CancelledError  # the caller is being cancelled; the store already knows
    return inv, run
