"""Every store transition hammered by many callers at once, on SQLite and on PostgreSQL.

Real parts: a SQLite file, a PostgreSQL database of its own per test, real threads and real
spawned processes (each with its own Store, as the API, runners and workers have). Each test
asserts one winner, a truthful answer to every caller, and no lost update.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from store_hammer import (
    hammer,
    op_cancel_test,
    op_complete,
    op_edit_draft,
    op_end,
    op_promote,
    op_promote_same,
    op_start,
    op_test_run,
    op_update_test,
)
from test_store import PG_ADMIN, _postgres_available, _test

from glow.errors import TransitionError
from glow.models import Draft, ModelSpec, Scenario, Status, TestSpec
from glow.store import Store
from glow.store import tables as t

MODES = [pytest.param(False, id="threads"), pytest.param(True, id="processes")]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'glow.db'}"
        Store(url).engine.dispose()
        yield url
        return
    if not _postgres_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"glow_race_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    Store(url).engine.dispose()
    yield url
    from store_hammer import _stores

    if url in _stores:
        _stores.pop(url).engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url, create=False)
    yield s
    s.engine.dispose()


def _size(processes: bool) -> tuple[int, int]:
    """(workers, rounds): processes are fewer (2 cores), threads more."""
    return (4, 6) if processes else (8, 10)


def _no_crash(rounds: list[list[tuple[Any, ...]]]) -> None:
    crashes = [a[1] for r in rounds for a in r if a[0] == "crash"]
    assert not crashes, crashes[0]


def _runs(store: Store, invocation_id: str) -> list[Any]:
    return store.get_invocation(invocation_id).runs


def _generations(store: Store, invocation_id: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(t.generations.c.invocation_id == invocation_id)
            ).scalar_one()
        )


@pytest.mark.parametrize("processes", MODES)
def test_start_run_opens_one_run(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    _, invs = _test(store, rounds)
    answers = hammer(
        db_url, op_start, [i.invocation_id for i in invs], workers, processes=processes
    )
    _no_crash(answers)
    for inv, round_ in zip(invs, answers, strict=True):
        won = [a for a in round_ if a[0] == "won"]
        assert len(won) == 1, f"{len(won)} callers opened a run of one queued invocation"
        for a in round_:
            if a[0] == "refused":  # told the truth: it is running now
                assert f"invocation {inv.invocation_id} is running" in a[1], a[1]
        stored = store.get_invocation(inv.invocation_id)
        assert stored.status is Status.running and stored.attempts == 1
        assert [r.run_id for r in stored.runs] == [won[0][1]]


@pytest.mark.parametrize("processes", MODES)
def test_terminate_and_finish_have_one_winner(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    test_id, invs = _test(store, rounds)
    args = []
    for inv in invs:
        run = store.start_run(inv.invocation_id, owner="runner")
        args.append((test_id, inv.invocation_id, run.model_dump(mode="json")))
    answers = hammer(db_url, op_end, args, workers, processes=processes)
    _no_crash(answers)
    outcomes = set()
    for inv, round_ in zip(invs, answers, strict=True):
        stored = store.get_invocation(inv.invocation_id)
        finish, terminators = round_[0], round_[1:]
        won = [a for a in terminators if a[0] == "terminated"]
        refused = [a for a in terminators if a[0] == "refused"]
        outcomes.add(stored.status)
        if stored.status is Status.completed:
            assert finish == ("finish", "completed")
            assert not won, "a terminate was answered `terminated` but the row is completed"
            assert all("is completed" in a[1] for a in refused), refused
        else:
            assert stored.status is Status.terminated
            assert finish == ("finish", "terminated"), finish  # its late result was discarded
            assert len(won) == 1, f"{len(won)} terminates won"
            assert stored.error_message == won[0][2]
            assert all("is terminated" in a[1] for a in refused), refused
        assert [r.status for r in stored.runs] == [stored.status]
        # The finished run's generation is kept either way: it was paid for.
        assert _generations(store, inv.invocation_id) == 1


@pytest.mark.parametrize("processes", MODES)
def test_cancelling_a_test_and_finishing_cells_agree(
    db_url: str, store: Store, processes: bool
) -> None:
    workers, rounds = _size(processes)
    args, tests = [], []
    for _ in range(rounds):
        test_id, invs = _test(store, workers)  # one queued cell is never started
        runs = [store.start_run(i.invocation_id, owner="runner") for i in invs[: workers - 1]]
        args.append((test_id, [r.model_dump(mode="json") for r in runs]))
        tests.append((test_id, invs))
    answers = hammer(db_url, op_cancel_test, args, workers, processes=processes)
    _no_crash(answers)
    for (test_id, invs), round_ in zip(tests, answers, strict=True):
        cancelled = round_[0][1]
        by_id = {i.invocation_id: i for i in store.list_invocations(test_id)}
        for _, invocation_id, told, run_status in round_[1:]:
            row = by_id[invocation_id]
            # Each finisher was told the truth: its result stands, or it was discarded.
            assert told == row.status.value, (told, row.status)
            assert (run_status == "completed") == (row.status is Status.completed)
            assert [r.status for r in store.get_invocation(invocation_id).runs] == [row.status]
        terminated = [i for i in by_id.values() if i.status is Status.terminated]
        assert all(i.error_type == "Cancelled" for i in terminated)
        assert cancelled == len(terminated), "the cancel counted cells it did not terminate"
        assert by_id[invs[-1].invocation_id].status is Status.terminated  # the queued one
        assert sum(_generations(store, i.invocation_id) for i in invs) == workers - 1


@pytest.mark.parametrize("processes", MODES)
def test_complete_has_one_winner(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    test_id, invs = _test(store, rounds)
    for inv in invs:
        store.start_run(inv.invocation_id, owner="runner")  # a run in flight, abandoned
    args = [(test_id, inv.invocation_id) for inv in invs]
    answers = hammer(db_url, op_complete, args, workers, processes=processes)
    _no_crash(answers)
    for inv, round_ in zip(invs, answers, strict=True):
        stored = store.get_invocation(inv.invocation_id)
        winners = [a for a in round_ if a[0] == "finish" and a[4] == "completed"]
        assert len(winners) == 1, f"{len(winners)} callers were told they completed it"
        assert stored.status is Status.completed and stored.output == winners[0][3]
        for a in round_:
            if a[0] == "refused":
                assert "is completed" in a[1], a[1]
            elif a is not winners[0]:  # discarded, and told the invocation's status then
                assert a[4] == "terminated" and a[1] in ("running", "completed"), a
        started = [a for a in round_ if a[0] == "finish"]
        assert stored.attempts == 1 + len(started)
        assert len({r.number for r in stored.runs}) == len(stored.runs) == stored.attempts
        completed_runs = [r for r in stored.runs if r.status is Status.completed]
        assert [r.run_id for r in completed_runs] == [winners[0][2]]
        assert _generations(store, inv.invocation_id) == len(started)


@pytest.mark.parametrize("processes", MODES)
def test_update_test_loses_no_field(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    test_ids = [_test(store, 1)[0] for _ in range(rounds)]
    answers = hammer(
        db_url,
        op_update_test,
        list(zip(test_ids, range(rounds), strict=True)),
        workers,
        processes=processes,
    )
    _no_crash(answers)
    for round_, test_id in enumerate(test_ids):
        record = store.get_test(test_id)
        by_kind = lambda k: [w for w in range(workers) if w % 4 == k]  # noqa: E731
        assert record.status == ("running" if round_ % 2 else "completed")
        assert record.flow_run_id in {f"flow-{round_}-{w}" for w in by_kind(1)}
        assert record.name in {f"name-{round_}-{w}" for w in by_kind(2)}
        assert record.spec.tags and record.spec.tags[0] in {f"t{round_}-{w}" for w in by_kind(3)}


def _promotable_test(store: Store) -> str:
    from glow.planning import create_or_resume
    from glow.spec import resolve_test

    spec = TestSpec(
        name="promote",
        scenarios=[
            Scenario(id="q1", input="1+1?", reference="2"),
            Scenario(id="q2", input="2+2?", reference="4"),
        ],
        models=[ModelSpec(name="m0", model="openai/m0")],
        rubric="exact_answer",
    )
    record, _ = create_or_resume(store, resolve_test(spec))
    return record.test_id


@pytest.mark.parametrize("processes", MODES)
def test_draft_promotions_lose_no_model(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    args = []
    for _ in range(max(2, rounds // 3)):
        test_id = _promotable_test(store)
        drafts = [
            store.save_draft(
                Draft(
                    test_id=test_id,
                    scenario_id="q1",
                    model=ModelSpec(name=f"m{w + 1}", model=f"openai/m{w + 1}"),
                )
            ).draft_id
            for w in range(workers - 1)
        ]
        args.append((test_id, drafts))
    answers = hammer(db_url, op_promote, args, workers, processes=processes)
    _no_crash(answers)
    for (test_id, drafts), round_ in zip(args, answers, strict=True):
        promoted = [a for a in round_ if a[0] == "promoted"]
        assert len(promoted) == len(drafts), round_
        record = store.get_test(test_id)
        names = {m.name for m in record.spec.models}
        assert names == {f"m{w}" for w in range(workers)}, "a promotion's model was lost"
        assert record.status == "running", "the status change was lost"
        for _, invocation_id, model in promoted:
            assert store.get_invocation(invocation_id).model == model
        assert store.list_drafts(test_id) == []


@pytest.mark.parametrize("processes", MODES)
def test_one_draft_promoted_once(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    args = []
    for _ in range(max(2, rounds // 3)):
        test_id = _promotable_test(store)
        draft = Draft(
            test_id=test_id, scenario_id="q2", model=ModelSpec(name="new", model="openai/new")
        )
        args.append((test_id, store.save_draft(draft).draft_id))
    answers = hammer(db_url, op_promote_same, args, workers, processes=processes)
    _no_crash(answers)
    for (test_id, draft_id), round_ in zip(args, answers, strict=True):
        promoted = [a for a in round_ if a[0] == "promoted"]
        assert len(promoted) == 1, round_
        for a in round_:
            if a[0] == "refused":
                assert a[1] in (404, 409) and (draft_id in a[2] or "already exists" in a[2]), a
        invs = store.list_invocations(test_id, model="new")
        assert [i.invocation_id for i in invs] == [promoted[0][1]]
        assert [m.name for m in store.get_test(test_id).spec.models] == ["m0", "new"]


@pytest.mark.parametrize("processes", MODES)
def test_draft_edits_lose_no_field(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    test_id = _promotable_test(store)
    drafts = [
        store.save_draft(Draft(test_id=test_id, scenario_id="q1")).draft_id for _ in range(rounds)
    ]
    answers = hammer(db_url, op_edit_draft, drafts, workers, processes=processes)
    _no_crash(answers)
    for draft_id in drafts:
        draft = store.get_draft(draft_id)
        assert (draft.epoch, draft.params, draft.scenario_id) == (7, {"temperature": 0.5}, "q2")


@pytest.mark.parametrize("processes", MODES)
def test_test_run_is_claimed_once(db_url: str, store: Store, processes: bool) -> None:
    workers, rounds = _size(processes)
    test_ids = [_test(store, 1)[0] for _ in range(rounds)]
    answers = hammer(db_url, op_test_run, test_ids, workers, processes=processes)
    _no_crash(answers)
    for test_id, round_ in zip(test_ids, answers, strict=True):
        won = [a for a in round_ if a[0] == "won"]
        assert len(won) == 1, f"{len(won)} callers started a run-test flow for one test"
        for a in round_:
            if a[0] == "refused":
                assert f"test {test_id} is running" in a[1], a[1]
        assert store.get_test(test_id).status == "running"


def test_api_test_run_starts_one_flow(
    db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/test/run` from eight threads at once: one flow run is started, seven get 409.

    Prefect's flow start is replaced by a recorder (a stand-in, not Prefect): what is under
    test is the claim before it; tests/test_api.py starts real flow runs.
    """
    import threading

    import glow.api.background as background
    from glow.api.errors import ApiError
    from glow.api.schemas import TestRef
    from glow.api.tests import run

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(
        background,
        "start_flow",
        lambda flow, params, **_: started.append(params) or f"flow-{len(started)}",
    )
    workers = 8
    for _ in range(4):
        test_id = _test(store, 1)[0]
        barrier = threading.Barrier(workers)
        answers: list[tuple[Any, ...]] = []

        def call(
            tid: str = test_id,
            gate: threading.Barrier = barrier,
            answers: list[tuple[Any, ...]] = answers,
        ) -> None:
            gate.wait()
            try:
                answers.append(("started", run(TestRef(test_id=tid), store).flow_run_id))
            except (ApiError, TransitionError) as exc:
                answers.append(("refused", str(exc)))

        threads = [threading.Thread(target=call) for _ in range(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert [a[0] for a in answers].count("started") == 1, answers
        assert all(f"test {test_id} is running" in a[1] for a in answers if a[0] == "refused")
        assert [p["test_id"] for p in started].count(test_id) == 1
