"""`run-invocation`: one cell, start to end.

Mark the invocation running (a new run), drive the model (one call, or an agent loop with tool
calls up to `max_turns`), record the trace, grade it, write everything in one transaction, and
publish the trace as a Prefect markdown artifact `trace-<invocation-id>`. Errors end the
invocation `failed` with the error kept; they never fail the Prefect task, so one bad cell never
stops a benchmark. A terminated invocation (or a cancelled test) abandons its in-flight call at
once: the cell's asyncio task is cancelled, its partial trace is kept and a late answer is
discarded.

A cell that failed in grading (`glow.models.GRADING_ERRORS`: its judge was unreachable, answered
without a score, or was refused by the budget) is not run again: its new run copies the recorded
run's model events, notes which run it grades, and grades that recorded output, so the model
under test is not called. The run-test flow knows these cells from the store
(`glow.planning.grading_failed`); a run the API opened (`invocation_run`) grades again when the
run before it failed in grading.

`execute_invocation` is plain async Python (the API and tests can run a cell without a flow);
`run_invocation` is the Prefect task the flows map over cells. All cells of a process share one
event loop: a thread per in-flight call would cost more CPU than the calls themselves.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.states import Cancelled

from glow import cancel
from glow.artifacts import ArtifactPublisher
from glow.budget import Budget, spent_usd
from glow.limits import model_slot, provider_slot
from glow.llm import CallOptions, ModelCallError, acall_model
from glow.models import (
    GRADING_ERRORS,
    AgentSpec,
    Cell,
    Generation,
    Invocation,
    ModelSpec,
    Run,
    Status,
    TestRecord,
    TraceEvent,
    known_sum,
    utcnow,
)
from glow.planning import grading_failed, invocation_for
from glow.secrets import redact
from glow.spec import LoadedTest, import_object, resolve_test
from glow.store import RUNNABLE, Store
from glow.threads import STORE, run_in
from glow.trace import scenario_messages, tool_schema, trace_markdown
from tasks.grade import GRADED_AGAIN, GradingFailed, grade_run, model_events

LEASE_S = 60.0  # renewed every few seconds by glow.cancel's watcher while the cell runs


@dataclass
class TestContext:
    """What every cell of a test shares: the resolved test and the store. Built once per process."""

    __test__ = False

    test_id: str
    loaded: LoadedTest
    store: Store
    publisher: ArtifactPublisher | None = None
    tools: dict[str, Any] = field(default_factory=dict)
    # The stored test's revision `loaded` was built from (None: read it when registered); the
    # per-process cache holds a context only while the store still has that revision.
    revision: int | None = None

    def __post_init__(self) -> None:
        self.scenarios = self.loaded.scenarios_by_id
        self.models = {m.name: m for m in self.loaded.spec.models}
        self.agents = {a.name: a for a in self.loaded.spec.agents}
        self.budget: Budget | None = None
        if self.loaded.spec.budget_usd is not None:
            # Every generation paid for counts, not just each invocation's latest run.
            self.budget = Budget(self.loaded.spec.budget_usd, spent_usd(self.store, self.test_id))
        # Cells to grade again from their recorded output rather than run (see module docstring).
        self.grade_only: set[str] = grading_failed(self.store, self.test_id)

    def options(self, model: ModelSpec) -> CallOptions:
        spec = self.loaded.spec
        return CallOptions(
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            # One deadline for the whole invocation: every turn of its agent loop shares it.
            deadline_at=None if spec.deadline_s is None else time.monotonic() + spec.deadline_s,
            budget=self.budget,
            provider_slot=provider_slot(
                model.provider if model.provider in spec.provider_limits else None
            ),
            slot=model_slot(self.test_id, model.name, model.max_in_flight),
        )

    def tool(self, ref: str) -> Any:
        if ref not in self.tools:
            self.tools[ref] = import_object(ref)
        return self.tools[ref]


_contexts: dict[str, TestContext] = {}
_contexts_lock = threading.Lock()


def register_context(ctx: TestContext) -> None:
    if ctx.revision is None:
        ctx.revision = ctx.store.test_revision(ctx.test_id)
    with _contexts_lock:
        _contexts[ctx.test_id] = ctx


def context_for(
    test_id: str,
    store: Store | None = None,
    record: TestRecord | None = None,
    *,
    fresh: bool = True,
) -> TestContext:
    """The test's context: the one registered (by the flow, or an earlier call) while the
    stored test is still at its revision, else rebuilt from the store's record (another
    process may have added a model or a scenario). `record`: the test as the caller just read
    it. `fresh=False` takes a registered context as it is (a flow's own cells, whose flow
    registered it), without reading the store.
    """
    with _contexts_lock:
        cached = _contexts.get(test_id)
    if cached is not None and not fresh:
        return cached
    store = store or (cached.store if cached else Store.from_settings())
    revision = record.revision if record is not None else store.test_revision(test_id)
    if cached is not None and cached.revision == revision:
        return cached
    record = record if record is not None else store.get_test(test_id)
    ctx = TestContext(test_id, resolve_record(record), store, revision=record.revision)
    register_context(ctx)
    return ctx


def resolve_record(record: TestRecord) -> LoadedTest:
    from glow.bundled_simulator import rebind

    path = Path(record.spec_path) if record.spec_path else None
    # The stored spec holds the simulator address of the day it was loaded: use today's.
    loaded = resolve_test(rebind(record.spec, path), path=path)
    loaded.rubric = record.rubric  # the rubric version the test was created with
    return loaded


async def _agent_loop(
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
            Generation(
                test_id=test_id,
                invocation_id=run.invocation_id,
                run_id=run.run_id,
                model=model.name,
                litellm_model=model.model,
                provider=model.provider,
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cost_usd=reply.cost_usd,
                latency_s=reply.latency_s,
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


async def execute_invocation(
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
            lease_s=LEASE_S,
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
                output = await _agent_loop(
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


@task(
    name="run-invocation",
    task_run_name="{cell.label}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def run_invocation(cell: Cell, run_id: str | None = None) -> Any:
    """Run one cell and publish its trace artifact; returns the final status.

    A terminated cell ends its task run Cancelled, so the Prefect UI tells it apart. `run_id`
    names a run the API already opened (`invocation_run`), which this task then carries out.
    """
    # The flow that maps this task registered the context (run-test) or refreshed it just
    # before (run-invocation-flow): no store read on the event loop per cell.
    ctx = context_for(cell.test_id, fresh=False)
    run = await run_in(STORE, ctx.store.get_run, run_id) if run_id else None
    inv, run = await execute_invocation(ctx, cell, run=run, grade_only=None)
    task_ctx = TaskRunContext.get()
    publisher = ctx.publisher or ArtifactPublisher()
    publisher.publish(
        key=f"trace-{inv.invocation_id}",
        markdown=trace_markdown(inv, run),
        description=f"{inv.scenario_id} x {inv.model} x {inv.agent}: {inv.status.value}",
        task_run_id=task_ctx.task_run.id if task_ctx else None,
        flow_run_id=task_ctx.task_run.flow_run_id if task_ctx else None,
    )
    if ctx.publisher is None:
        await publisher.flush()
    if inv.status is Status.terminated:
        return Cancelled(message=inv.error_message or "terminated", data=inv.status.value)
    return inv.status.value
