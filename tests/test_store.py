"""The store on a real SQLite file and a real PostgreSQL server (a database of its own per test)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text, update

from glow.errors import NotFound, TransitionError
from glow.models import (
    Generation,
    Invocation,
    ModelSpec,
    Rubric,
    Status,
    TestRecord,
    TestSpec,
    utcnow,
)
from glow.store import RUNNABLE, TERMINABLE, Store
from glow.store import tables as t

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _postgres_available() -> bool:
    try:
        with create_engine(PG_ADMIN).connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:  # noqa: BLE001 - no server: those tests are skipped, and say why
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'glow.db'}")
        return
    if not _postgres_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"glow_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    yield store
    store.engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _test(store: Store, n: int = 5) -> tuple[str, list[Invocation]]:
    spec = TestSpec(
        name="t", scenarios=[], models=[ModelSpec(name="m", model="openai/x")], rubric="r"
    )
    rubric = Rubric(name="r", standards=[{"name": "s", "kind": "exact"}])
    record = TestRecord(test_id=str(uuid.uuid4()), name="t", spec=spec, rubric=rubric)
    store.create_test(record)
    invs = [
        Invocation(
            invocation_id=str(uuid.uuid4()),
            test_id=record.test_id,
            scenario_id=f"s{i}",
            model="m",
            agent="direct",
            provider="openai",
        )
        for i in range(n)
    ]
    assert store.ensure_invocations(invs) == n
    assert store.ensure_invocations(invs) == 0  # idempotent: a resume adds nothing
    return record.test_id, invs


def test_lifecycle_and_guarded_transitions(any_store: Store) -> None:
    test_id, invs = _test(any_store)
    inv_id = invs[0].invocation_id
    run = any_store.start_run(inv_id)
    with pytest.raises(TransitionError, match="is running"):
        any_store.start_run(inv_id)  # a running invocation cannot be started twice
    run.status, run.output, run.finished_at = Status.completed, "4", utcnow()
    gen = Generation(
        test_id=test_id,
        invocation_id=inv_id,
        run_id=run.run_id,
        model="m",
        litellm_model="openai/x",
        provider="openai",
        cost_usd=None,
    )
    any_store.finish_run(
        run, invocation={"status": Status.completed, "output": "4"}, generations=[gen], scores=[]
    )
    stored = any_store.get_invocation(inv_id)
    assert stored.status is Status.completed and stored.runs[0].output == "4"
    assert any_store.count_generations(test_id) == 1
    with pytest.raises(TransitionError, match="is completed"):
        any_store.transition(inv_id, Status.terminated, allowed=TERMINABLE)
    with pytest.raises(NotFound):
        any_store.get_invocation("nope")
    assert any_store.count_invocations(test_id) == {"completed": 1, "queued": 4}


def test_finish_run_refuses_a_field_that_is_not_a_column(any_store: Store) -> None:
    # The UPDATE is built once and sets whatever columns its parameters name, so a misspelt
    # field would otherwise vanish silently: it must fail, and write nothing.
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    run = any_store.start_run(inv_id)
    run.status, run.finished_at = Status.completed, utcnow()
    with pytest.raises(ValueError, match="not columns of invocations: outptu"):
        any_store.finish_run(
            run,
            invocation={"status": Status.completed, "outptu": "4"},
            generations=[],
            scores=[],
        )
    stored = any_store.get_invocation(inv_id)
    assert stored.status is Status.running and stored.runs[0].status is Status.running


def test_late_result_of_a_terminated_run_is_discarded(any_store: Store) -> None:
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    run = any_store.start_run(inv_id)
    any_store.transition(inv_id, Status.terminated, allowed=TERMINABLE)
    run.trace = []
    status = any_store.finish_run(
        run, invocation={"status": Status.completed, "output": "late"}, generations=[], scores=[]
    )
    assert status is Status.terminated
    stored = any_store.get_invocation(inv_id)
    assert stored.status is Status.terminated and stored.output is None
    assert stored.runs[0].status is Status.terminated


def test_stale_running_invocation_is_reclaimed(any_store: Store) -> None:
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    any_store.start_run(inv_id, lease_s=3600)
    with pytest.raises(TransitionError):
        any_store.start_run(inv_id)  # a live lease protects the cell from a second runner
    with any_store.engine.begin() as conn:  # the runner died: its lease runs out
        conn.execute(update(t.invocations).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    second = any_store.start_run(inv_id, allowed=RUNNABLE)
    runs = any_store.get_invocation(inv_id).runs
    assert second.number == 2 and [r.status for r in runs] == [Status.terminated, Status.running]


def test_keyset_pages_return_every_row_once(any_store: Store) -> None:
    test_id, invs = _test(any_store, 23)
    seen: list[str] = []
    after = None
    while True:
        page = any_store.list_invocations(test_id, after=after, limit=5)
        if not page:
            break
        # Status changes between pages do not move rows across pages.
        any_store.transition(page[0].invocation_id, Status.terminated, allowed=TERMINABLE)
        seen += [i.invocation_id for i in page]
        after = page[-1].invocation_id
    assert sorted(seen) == sorted(i.invocation_id for i in invs)


def test_concurrent_writers_never_lock(any_store: Store) -> None:
    _, invs = _test(any_store, 40)
    errors: list[BaseException] = []

    def work(inv: Invocation) -> None:
        try:
            run = any_store.start_run(inv.invocation_id)
            run.status = Status.completed
            any_store.save_trace(run)
            any_store.finish_run(
                run, invocation={"status": Status.completed}, generations=[], scores=[]
            )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(inv,)) for inv in invs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert any_store.count_invocations(invs[0].test_id) == {"completed": 40}
