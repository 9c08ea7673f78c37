"""Seeding invocations by hand: one test cell, or a draft promoted to a cell.

One schema, one way a cell runs: a draft whose scenario, model or agent the test does not have
yet is added to the test's stored spec first, so the new invocation is an ordinary cell of its
test that `invocation_run`, `run-test` and the results all understand.
"""

from __future__ import annotations

import hashlib
import json
from typing import TypeVar

from glow.api.errors import ApiError
from glow.models import AgentSpec, Cell, Draft, Invocation, ModelSpec, Scenario
from glow.planning import invocation_for
from glow.spec import LoadedTest
from glow.store import Store

Named = TypeVar("Named", ModelSpec, AgentSpec)


def _context(store: Store, test_id: str) -> LoadedTest:
    from glow.context import context_for

    return context_for(test_id, store).loaded


def create_cell(
    store: Store, test_id: str, scenario_id: str, model: str, agent: str | None, epoch: int
) -> Invocation:
    """A queued invocation for one cell of the test; 409 if that cell already exists."""
    store.get_test(test_id)
    loaded = _context(store, test_id)
    if scenario_id not in loaded.scenarios_by_id:
        raise ApiError(404, f"scenario {scenario_id!r} is not in test {test_id}")
    models = {m.name: m for m in loaded.spec.models}
    if model not in models:
        raise ApiError(
            422,
            f"model: {model!r} is not a model of test {test_id} (its models: {', '.join(models)})",
        )
    agents = [a.name for a in loaded.spec.agents]
    agent = agent or agents[0]
    if agent not in agents:
        raise ApiError(
            422,
            f"agent: {agent!r} is not an agent of test {test_id} (its agents: {', '.join(agents)})",
        )
    scenario = loaded.scenarios_by_id[scenario_id]
    missing = sorted(set(scenario.modalities) - set(models[model].modalities))
    if missing:
        raise ApiError(
            422,
            f"model: {model} does not accept {', '.join(missing)}, which "
            f"scenario {scenario_id} needs",
        )
    cell = Cell(test_id=test_id, scenario_id=scenario_id, model=model, agent=agent, epoch=epoch)
    if not store.ensure_invocations([invocation_for(cell, loaded)]):
        existing = store.get_invocation(cell.invocation_id, runs=False)
        raise ApiError(
            409,
            f"invocation {existing.invocation_id} already exists for this cell "
            f"and is {existing.status.value}; use invocation_run to re-fire it",
        )
    return store.get_invocation(cell.invocation_id, runs=True, trace=False)


def _digest(spec: ModelSpec | AgentSpec) -> str:
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _place(wanted: Named, existing: list[Named]) -> tuple[Named, list[Named]]:
    """Find `wanted` among the test's entries, or add it (renamed if its name is taken)."""
    by_name = {e.name: e for e in existing}
    if by_name.get(wanted.name) == wanted:
        return wanted, existing
    if wanted.name in by_name:
        wanted = wanted.model_copy(update={"name": f"{wanted.name}-{_digest(wanted)}"})
        if by_name.get(wanted.name) == wanted:
            return wanted, existing
    return wanted, [*existing, wanted]


def _pick(value: Named | str | None, existing: list[Named], what: str, draft: Draft) -> Named:
    if value is None:
        if what == "agent":
            return existing[0]
        raise ApiError(422, f"{what}: draft {draft.draft_id} has no {what}; edit it first")
    if isinstance(value, str):
        found = next((e for e in existing if e.name == value), None)
        if found is None:
            raise ApiError(
                422,
                f"{what}: {value!r} is not in test {draft.test_id}; give the "
                f"draft a full {what} to add one",
            )
        return found
    return value


def promote_draft(store: Store, draft: Draft) -> Invocation:
    """Turn a draft into a queued invocation, adding what it brings to the test's spec.

    The draft is taken out of the store first (one promotion per draft, and not one of an
    older read of an edited draft), and put back if the promotion fails. The spec is written
    only if nobody changed the test since it was read; else it is read again and redone.
    """
    from glow.store.store import StaleTest

    store.claim_draft(draft)
    try:
        for _ in range(_PROMOTE_ROUNDS):
            try:
                return _promote(store, draft)
            except StaleTest:
                continue
        raise ApiError(
            409, f"test {draft.test_id} kept changing while draft {draft.draft_id} was promoted"
        )
    except BaseException:
        store.restore_draft(draft)
        raise


_PROMOTE_ROUNDS = 50


def _promote(store: Store, draft: Draft) -> Invocation:
    from glow.context import TestContext, context_for, register_context
    from glow.spec import resolve_test

    record = store.get_test(draft.test_id)
    loaded = context_for(draft.test_id, store, record=record).loaded
    spec = record.spec
    scenarios: list[Scenario] = list(loaded.scenarios)
    if draft.scenario is not None:
        scenario = draft.scenario
        known = loaded.scenarios_by_id.get(scenario.id)
        if known is None:
            scenarios.append(scenario)
        elif known != scenario:
            raise ApiError(
                409,
                f"scenario {scenario.id!r} already exists in test "
                f"{draft.test_id} with other content; give the draft's "
                "scenario a new id",
            )
    elif draft.scenario_id is not None:
        if draft.scenario_id not in loaded.scenarios_by_id:
            raise ApiError(404, f"scenario {draft.scenario_id!r} is not in test {draft.test_id}")
        scenario = loaded.scenarios_by_id[draft.scenario_id]
    else:
        raise ApiError(422, f"scenario: draft {draft.draft_id} has no scenario or scenario_id")

    model = _pick(draft.model, list(spec.models), "model", draft)
    if draft.params:
        model = model.model_copy(update={"params": {**model.params, **draft.params}})
    model, models = _place(model, list(spec.models))
    agent, agents = _place(_pick(draft.agent, list(spec.agents), "agent", draft), list(spec.agents))

    changed = (len(scenarios), models, agents) != (len(loaded.scenarios), spec.models, spec.agents)
    if changed:
        new_spec = spec.model_copy(
            update={
                "scenarios": scenarios
                if len(scenarios) != len(loaded.scenarios)
                else spec.scenarios,
                "models": models,
                "agents": agents,
            }
        )
        new_spec = type(spec).model_validate(new_spec.model_dump(mode="json"))
        new_loaded = resolve_test(new_spec, path=loaded.path)
        new_loaded.rubric = record.rubric
        revision = store.update_test(
            draft.test_id,
            expect_revision=record.revision,
            spec=new_spec,
            skipped=new_loaded.skipped_cells(),
        )
        register_context(TestContext(draft.test_id, new_loaded, store, revision=revision))
    return create_cell(store, draft.test_id, scenario.id, model.name, agent.name, draft.epoch)
