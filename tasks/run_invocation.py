"""`run-invocation`: one cell, start to end.

Mark the invocation running (a new run), drive the model (one call, or an agent loop with tool
calls up to `max_turns`), record the trace, grade it, write everything in one transaction, and
publish the trace as a Prefect markdown artifact `trace-<invocation-id>`. Errors end the
invocation `failed` with the error kept; they never fail the Prefect task, so one bad cell never
stops a benchmark.

`execute_invocation` is plain Python so the HTTP API and tests can run a cell without a flow;
`run_invocation` is the Prefect task the `run-test` flow maps over the cells.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from glow.limits import model_slot
from glow.llm import CallOptions, ModelCallError, call_model
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
from glow.spec import LoadedTest, import_object, resolve_test
from glow.store import RUNNABLE, Store
from glow.trace import scenario_messages, tool_schema, trace_markdown
from tasks.grade import grade_run


@dataclass
class TestContext:
    """What every cell of a test shares: the resolved test and the store. Built once per process."""

    __test__ = False

    test_id: str
    loaded: LoadedTest
    store: Store
    tools: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scenarios = self.loaded.scenarios_by_id
        self.models = {m.name: m for m in self.loaded.spec.models}
        self.agents = {a.name: a for a in self.loaded.spec.agents}

    def options(self, model: ModelSpec) -> CallOptions:
        spec = self.loaded.spec
        return CallOptions(
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
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
    path = Path(record.spec_path) if record.spec_path else None
    loaded = resolve_test(record.spec, path=path)
    loaded.rubric = record.rubric  # the rubric version the test was created with
    return loaded


def _agent_loop(
    ctx: TestContext, model: ModelSpec, agent: AgentSpec, messages: list[dict[str, Any]],
    run: Run, generations: list[Generation], inv: Invocation,
) -> str:
    """Call the model, run the tools it asks for, repeat up to max_turns; return the answer."""
    tools = {ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1]: ctx.tool(ref) for ref in agent.tools}
    schemas = [tool_schema(fn) for fn in tools.values()] or None
    options = ctx.options(model)
    answer = ""
    for turn in range(1, agent.max_turns + 1):
        reply = call_model(model, messages, tools=schemas, options=options)
        run.trace.extend(reply.events)
        generations.append(
            Generation(
                test_id=inv.test_id,
                invocation_id=inv.invocation_id,
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
        # Between turns: keep the partial trace, and stop if the invocation was terminated.
        ctx.store.save_trace(run)
        if ctx.store.get_invocation(inv.invocation_id, runs=False).status is not Status.running:
            break
    return answer


def execute_invocation(
    ctx: TestContext, invocation_id: str, *, allowed: frozenset[Status] = RUNNABLE
) -> Invocation:
    """Run one invocation to its end and return it as stored."""
    inv = ctx.store.get_invocation(invocation_id, runs=False)
    scenario = ctx.scenarios[inv.scenario_id]
    model = ctx.models[inv.model]
    agent = ctx.agents[inv.agent]
    spec = ctx.loaded.spec
    lease = (spec.timeout_s * (spec.max_retries + 1) + 30) * (agent.max_turns + 1)
    run = ctx.store.start_run(invocation_id, allowed=allowed, lease_s=lease)
    started = time.perf_counter()
    generations: list[Generation] = []
    error: tuple[str, str] | None = None
    output: str | None = None
    try:
        messages = scenario_messages(scenario, agent, ctx.loaded.base_dir)
        output = _agent_loop(ctx, model, agent, messages, run, generations, inv)
    except ModelCallError as exc:
        run.trace.extend(exc.events)
        error = (exc.error_type, exc.message)
    except Exception as exc:  # noqa: BLE001 - any failure ends the cell failed, with its reason
        error = (type(exc).__name__, str(exc)[:2000])
        run.trace.append(TraceEvent(kind="error", error_type=error[0], error_message=error[1]))
    latency = time.perf_counter() - started

    values: dict[str, Any] = {
        "output": output,
        "latency_s": latency,
        "finished_at": utcnow(),
        "input_tokens": sum(g.input_tokens for g in generations),
        "output_tokens": sum(g.output_tokens for g in generations),
        "model_cost_usd": known_sum(g.cost_usd for g in generations),
    }
    scores = []
    if error is None:
        grading = grade_run(
            rubric=ctx.loaded.rubric,
            scenario=scenario,
            output=output,
            trace=run.trace,
            test_id=inv.test_id,
            invocation_id=inv.invocation_id,
            run_id=run.run_id,
            judge=spec.judge,
            options=ctx.options(spec.judge) if spec.judge else None,
        )
        run.trace.extend(grading.events)
        generations.extend(grading.generations)
        scores = grading.scores
        judge_cost = grading.judge_cost_usd
        values.update(
            status=Status.completed,
            scores=grading.per_standard,
            score=grading.score,
            passed=grading.passed,
            rubric=ctx.loaded.rubric.label,
            judge_cost_usd=judge_cost,
        )
    else:
        values.update(status=Status.failed, error_type=error[0], error_message=error[1],
                      judge_cost_usd=0.0)
    values["cost_usd"] = known_sum([values["model_cost_usd"], values["judge_cost_usd"]])
    run.status = values["status"]
    run.finished_at = values["finished_at"]
    run.output = output
    run.error_type = error[0] if error else None
    run.error_message = error[1] if error else None
    ctx.store.finish_run(run, invocation=values, generations=generations, scores=scores)
    final = ctx.store.get_invocation(invocation_id, runs=False)
    final.runs = [run]
    return final


def _publish_trace(inv: Invocation) -> None:
    run = inv.runs[-1]
    create_markdown_artifact(
        key=f"trace-{inv.invocation_id}",
        markdown=trace_markdown(inv, run),
        description=f"{inv.scenario_id} x {inv.model} x {inv.agent}: {inv.status.value}",
    )


@task(
    name="run-invocation",
    task_run_name="{cell.label}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def run_invocation(cell: Cell) -> dict[str, Any]:
    """Run one cell; returns a small summary (the store holds the rest)."""
    ctx = context_for(cell.test_id)
    inv = execute_invocation(ctx, cell.invocation_id)
    _publish_trace(inv)
    return {"invocation_id": inv.invocation_id, "status": inv.status.value}
