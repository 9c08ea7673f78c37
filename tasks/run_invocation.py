"""`run-invocation`: one cell, start to end.

Mark the invocation running (a new run), drive the model (one call, or an agent loop with tool
calls up to `max_turns`), record the trace, grade it, write everything in one transaction, and
publish the trace as a Prefect markdown artifact `trace-<invocation-id>`. Errors end the
invocation `failed` with the error kept; they never fail the Prefect task, so one bad cell never
stops a benchmark. A terminated invocation (or a cancelled test) abandons its in-flight call at
once: the cell's asyncio task is cancelled, its partial trace is kept and a late answer is
discarded.

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
from glow.budget import Budget
from glow.limits import model_slot, provider_slot
from glow.llm import CallOptions, ModelCallError, acall_model
from glow.models import (
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
from glow.planning import invocation_for
from glow.spec import LoadedTest, import_object, resolve_test
from glow.store import RUNNABLE, Store
from glow.threads import STORE, run_in
from glow.trace import scenario_messages, tool_schema, trace_markdown
from tasks.grade import grade_run

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

    def __post_init__(self) -> None:
        self.scenarios = self.loaded.scenarios_by_id
        self.models = {m.name: m for m in self.loaded.spec.models}
        self.agents = {a.name: a for a in self.loaded.spec.agents}
        self.budget: Budget | None = None
        if self.loaded.spec.budget_usd is not None:
            spent = sum(i.cost_usd or 0.0 for i in self.store.list_invocations(self.test_id))
            self.budget = Budget(self.loaded.spec.budget_usd, spent)

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
    with _contexts_lock:
        _contexts[ctx.test_id] = ctx


def context_for(test_id: str, store: Store | None = None) -> TestContext:
    """The test's context: registered by the flow, else rebuilt from the store's record."""
    with _contexts_lock:
        if test_id in _contexts:
            return _contexts[test_id]
    store = store or Store.from_settings()
    record = store.get_test(test_id)
    ctx = TestContext(test_id, resolve_record(record), store)
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
                result = f"error: {type(exc).__name__}: {exc}"
            run.trace.append(TraceEvent(kind="tool_result", name=name, content=result))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    return answer


async def execute_invocation(
    ctx: TestContext,
    cell: Cell | str,
    *,
    allowed: frozenset[Status] = RUNNABLE,
    run: Run | None = None,
) -> tuple[Invocation, Run]:
    """Run one invocation to its end; return it as stored, with the run just made.

    `run` is a run already opened with `start_run` (the API opens it, so it can answer with the
    run id or a 409 at once); without it a new run is opened here.
    """
    if isinstance(cell, str):
        stored = await run_in(STORE, ctx.store.get_invocation, cell, runs=False)
        cell = Cell.of(stored)
    inv = invocation_for(cell, ctx.loaded)
    scenario = ctx.scenarios[cell.scenario_id]
    model, agent, spec = ctx.models[cell.model], ctx.agents[cell.agent], ctx.loaded.spec
    if run is None:
        run = await run_in(
            STORE,
            ctx.store.start_run,
            inv.invocation_id,
            allowed=allowed,
            owner=cancel.OWNER,
            lease_s=LEASE_S,
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
            messages = scenario_messages(scenario, agent, ctx.loaded.base_dir)
            output = await _agent_loop(ctx, model, agent, messages, run, generations, cell.test_id)
            grading = await grade_run(
                rubric=ctx.loaded.rubric,
                scenario=scenario,
                output=output,
                trace=run.trace,
                test_id=cell.test_id,
                invocation_id=inv.invocation_id,
                run_id=run.run_id,
                judge=spec.judge,
                options=ctx.options(spec.judge) if spec.judge else None,
            )
            run.trace.extend(grading.events)
            generations.extend(grading.generations)
            scores = grading.scores
            values.update(
                status=Status.completed,
                scores=grading.per_standard,
                score=grading.score,
                passed=grading.passed,
                rubric=ctx.loaded.rubric.label,
                judge_cost_usd=grading.judge_cost_usd,
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
        except Exception as exc:  # noqa: BLE001 - any failure ends the cell failed, with its reason
            error = (type(exc).__name__, str(exc)[:2000])
    if error is not None:
        run.trace.append(TraceEvent(kind="error", error_type=error[0], error_message=error[1]))
        values.update(
            status=Status.terminated if terminated else Status.failed,
            error_type=error[0],
            error_message=error[1],
            judge_cost_usd=known_sum(g.cost_usd for g in generations if g.role == "judge"),
        )
    values.update(
        output=output,
        latency_s=time.perf_counter() - started,
        finished_at=utcnow(),
        input_tokens=sum(g.input_tokens for g in generations if g.role == "model"),
        output_tokens=sum(g.output_tokens for g in generations if g.role == "model"),
        model_cost_usd=known_sum(g.cost_usd for g in generations if g.role == "model"),
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
    if final is not values["status"]:  # terminated meanwhile: the late result was discarded
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
    ctx = context_for(cell.test_id)
    run = await run_in(STORE, ctx.store.get_run, run_id) if run_id else None
    inv, run = await execute_invocation(ctx, cell, run=run)
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
