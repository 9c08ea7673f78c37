"""From a loaded test to stored cells: the cross product, skipped cells, create or resume.

Shared by the `run-test` flow, `glow run`, and the API's `create`, so a test is laid out one way.
"""

from __future__ import annotations

import uuid

from glow.errors import SpecError
from glow.models import GRADING_ERRORS, Cell, Invocation, Status, TestRecord
from glow.spec import LoadedTest
from glow.store import Store


def cells(loaded: LoadedTest, test_id: str) -> list[Cell]:
    """Every runnable cell: scenarios x models x agents x epochs, minus skipped modalities."""
    skipped = {(s.scenario_id, s.model, s.agent) for s in loaded.skipped_cells()}
    return [
        Cell(test_id=test_id, scenario_id=s.id, model=m.name, agent=a.name, epoch=e)
        for s in loaded.scenarios
        for m in loaded.spec.models
        for a in loaded.spec.agents
        for e in range(1, loaded.spec.epochs + 1)
        if (s.id, m.name, a.name) not in skipped
    ]


def invocation_for(cell: Cell, loaded: LoadedTest) -> Invocation:
    scenario = loaded.scenarios_by_id[cell.scenario_id]
    model = next(m for m in loaded.spec.models if m.name == cell.model)
    return Invocation(
        invocation_id=cell.invocation_id,
        test_id=cell.test_id,
        scenario_id=cell.scenario_id,
        category=scenario.category,
        model=cell.model,
        agent=cell.agent,
        provider=model.provider,
        epoch=cell.epoch,
        modalities=scenario.modalities,
    )


def grading_failed(store: Store, test_id: str) -> set[str]:
    """Ids of the test's invocations that failed in grading (`glow.models.GRADING_ERRORS`).

    A resume runs every cell that is not completed; these are graded again from their recorded
    output (`glow.execution.execute_cell`'s grade-only path) instead of calling the model under
    test.
    """
    failed = store.list_invocations(test_id, status=Status.failed)
    return {i.invocation_id for i in failed if i.error_type in GRADING_ERRORS}


def create_or_resume(
    store: Store, loaded: LoadedTest, test_id: str | None = None, *, resume: bool = False
) -> tuple[TestRecord, list[Cell]]:
    """Store a new test (or find the one to resume) and make sure all its cells exist, queued.

    Resuming keeps every invocation's status: completed cells are not run again, failed ones
    are, and those that failed in grading are graded again without a model call (see
    `grading_failed`).
    """
    if resume:
        if test_id is None:
            raise SpecError("--resume needs the test_id of the test to continue")
        record = store.get_test(test_id)
        if record.name != loaded.spec.name:
            raise SpecError(
                f"test {test_id} is named {record.name!r} but the file defines "
                f"{loaded.spec.name!r}; resume a test with the file it was started from"
            )
        store.update_test(test_id, spec=loaded.spec, skipped=loaded.skipped_cells())
        record = store.get_test(test_id)
    else:
        record = TestRecord(
            test_id=test_id or str(uuid.uuid4()),
            name=loaded.spec.name,
            spec=loaded.spec,
            rubric=loaded.rubric,
            spec_path=str(loaded.path.resolve()) if loaded.path else None,
            skipped=loaded.skipped_cells(),
        )
        store.create_test(record)
    plan = cells(loaded, record.test_id)
    store.ensure_invocations(invocation_for(c, loaded) for c in plan)
    return record, plan
