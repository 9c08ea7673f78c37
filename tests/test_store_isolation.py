"""Reads beside writers, paid generations of discarded runs, the test cache, lease owners.

Real parts: SQLite files, a PostgreSQL database per test (the `any_store` fixture), real
subprocesses (another process changing a test; a runner in another PID namespace made with
`unshare`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from test_store import _test, any_store  # noqa: F401 - the fixture is used by name
from test_store_races import _promotable_test

from glow.errors import TransitionError
from glow.models import Generation, ModelSpec, Status, utcnow
from glow.store import COMPLETABLE, TERMINABLE, Store
from glow.store import tables as t
from glow.store.owner import host_namespace, make_owner, owner_is_dead

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ reads vs a writer (SQLite)


def test_reads_do_not_wait_behind_a_writer(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'glow.db'}")
    test_id, invs = _test(store, 3)
    inv_id = invs[0].invocation_id
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.engine.begin() as conn:  # a write transaction, holding the write lock
            conn.execute(
                update(t.invocations)
                .where(t.invocations.c.invocation_id == inv_id)
                .values(output="uncommitted")
            )
            holding.set()
            release.wait(60)

    reads: list[Callable[[], Any]] = [
        lambda: store.get_test(test_id),
        lambda: store.get_invocation(inv_id),
        lambda: store.list_invocations(test_id),
        lambda: store.list_invocations_json(test_id),
        lambda: store.count_invocations(test_id),
        lambda: store.count_generations(test_id),
        lambda: store.list_tests(),
        lambda: store.list_drafts(test_id),
        lambda: store.terminated_among([inv_id]),
        lambda: store.test_revision(test_id),
    ]
    answers: list[Any] = []

    def reader() -> None:
        for read in reads:
            answers.append(read())

    writing = threading.Thread(target=writer)
    writing.start()
    assert holding.wait(10)
    reading = threading.Thread(target=reader)
    started = time.monotonic()
    reading.start()
    try:
        reading.join(5)
        assert not reading.is_alive(), "a read waited for the writer's transaction to end"
    finally:
        release.set()
        writing.join()
        reading.join()
    assert time.monotonic() - started < 5
    assert answers[1].output is None  # a snapshot of what is committed, not the open write


# ------------------------------------------------------------------ discarded runs keep generations


def _gen(run_id: str, invocation_id: str, test_id: str, cost: float) -> Generation:
    return Generation(
        test_id=test_id,
        invocation_id=invocation_id,
        run_id=run_id,
        model="m",
        litellm_model="openai/x",
        provider="openai",
        input_tokens=5,
        output_tokens=7,
        cost_usd=cost,
    )


def test_a_discarded_late_run_keeps_its_generations(any_store: Store) -> None:  # noqa: F811
    test_id, invs = _test(any_store, 2)
    # Terminated while in flight: the late answer is discarded, its two paid calls are kept.
    inv_id = invs[0].invocation_id
    run = any_store.start_run(inv_id)
    any_store.transition(inv_id, Status.terminated, allowed=TERMINABLE)
    run.status, run.output, run.finished_at = Status.completed, "late", utcnow()
    paid = [_gen(run.run_id, inv_id, test_id, 0.5), _gen(run.run_id, inv_id, test_id, 0.25)]
    status = any_store.finish_run(
        run, invocation={"status": Status.completed, "output": "late"}, generations=paid, scores=[]
    )
    assert status is Status.terminated and run.status is Status.terminated
    assert any_store.count_generations(test_id) == 2  # paid for: kept
    stored = any_store.get_invocation(inv_id)
    assert stored.status is Status.terminated and stored.output is None
    assert stored.runs[0].status is Status.terminated
    assert stored.runs[0].error_type == "Discarded" and "terminated" in stored.runs[0].error_message
    # Completed by hand while a run was in flight: that run's late result is discarded too.
    other = invs[1].invocation_id
    late = any_store.start_run(other)
    by_hand = any_store.start_run(other, allowed=COMPLETABLE)
    by_hand.status, by_hand.finished_at = Status.completed, utcnow()
    any_store.finish_run(
        by_hand, invocation={"status": Status.completed}, generations=[], scores=[]
    )
    late.status, late.finished_at = Status.completed, utcnow()
    assert (
        any_store.finish_run(
            late,
            invocation={"status": Status.completed, "output": "late"},
            generations=[_gen(late.run_id, other, test_id, 1.0)],
            scores=[],
        )
        is Status.completed
    )
    assert late.status is Status.terminated  # the caller can tell it was discarded
    assert any_store.get_invocation(other).output is None
    with any_store.engine.connect() as conn:
        rows = conn.execute(
            select(t.generations.c.run_id, t.generations.c.cost_usd).where(
                t.generations.c.test_id == test_id
            )
        ).all()
    assert sorted(r.run_id for r in rows) == sorted([run.run_id, run.run_id, late.run_id])
    assert sum(r.cost_usd for r in rows) == pytest.approx(1.75)


# ------------------------------------------------------------------ the test cache


def test_the_test_cache_sees_a_model_added_by_another_process(any_store: Store) -> None:  # noqa: F811
    from glow.api.cells import create_cell
    from glow.context import context_for

    test_id = _promotable_test(any_store)
    assert set(context_for(test_id, any_store).models) == {"m0"}  # cached in this process
    script = (
        "import sys\n"
        "from glow.models import ModelSpec\n"
        "from glow.store import Store\n"
        "store = Store(sys.argv[1], create=False)\n"
        "record = store.get_test(sys.argv[2])\n"
        "models = [*record.spec.models, ModelSpec(name='m9', model='openai/m9')]\n"
        "store.update_test(sys.argv[2], spec=record.spec.model_copy(update={'models': models}))\n"
    )
    url = any_store.url
    subprocess.run([sys.executable, "-c", script, url, test_id], check=True, cwd=ROOT, timeout=120)
    assert set(context_for(test_id, any_store).models) == {"m0", "m9"}
    inv = create_cell(any_store, test_id, "q1", "m9", None, 1)  # was a 422: unknown model
    assert inv.model == "m9" and inv.status is Status.queued


def test_an_unchanged_test_keeps_its_cached_context(any_store: Store) -> None:  # noqa: F811
    from glow.context import context_for

    test_id = _promotable_test(any_store)
    first = context_for(test_id, any_store)
    any_store.update_test(test_id, status="running", flow_run_id="f")  # not the definition
    assert context_for(test_id, any_store) is first
    spec = any_store.get_test(test_id).spec
    models = [*spec.models, ModelSpec(name="m2", model="openai/m2")]
    any_store.update_test(test_id, spec=spec.model_copy(update={"models": models}))
    assert context_for(test_id, any_store) is not first


# ------------------------------------------------------------------ lease owners


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return int(proc.stdout)


def test_an_owner_that_exited_here_is_dead_at_once(any_store: Store) -> None:  # noqa: F811
    proc = subprocess.run(
        [sys.executable, "-c", "from glow import cancel; print(cancel.OWNER)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    owner = proc.stdout.strip()
    host, pid, _, namespace = owner.split(":")
    assert host == socket.gethostname()[:24] and namespace == host_namespace() != ""
    assert len(owner) <= 64  # the lease_owner column's width
    assert owner_is_dead(owner)
    assert not owner_is_dead(make_owner())  # this process is alive
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    any_store.start_run(inv_id, owner=owner, lease_s=3600)
    second = any_store.start_run(inv_id)  # its runner is gone: reclaimed now, not in an hour
    assert second.number == 2


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) is not installed")
def test_an_owner_in_another_pid_namespace_is_not_judged_by_pid(any_store: Store) -> None:  # noqa: F811
    # A runner in a container that shares this hostname (host networking): a PID namespace of
    # its own, made here with unshare. Its PIDs mean nothing in this namespace.
    script = "from glow.store.owner import make_owner; print(make_owner())"
    proc = subprocess.run(
        ["unshare", "-Urp", "--fork", "--mount-proc", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {proc.stderr.strip()[:200]}")
    host, _, nonce, namespace = proc.stdout.strip().split(":")
    assert host == socket.gethostname()[:24] and namespace and namespace != host_namespace()
    # Its runner's PID, whatever it is there, names no process here: still alive there.
    owner = f"{host}:{_dead_pid()}:{nonce}:{namespace}"
    assert not owner_is_dead(owner)
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    any_store.start_run(inv_id, owner=owner, lease_s=3600)
    with pytest.raises(TransitionError, match="is running"):
        any_store.start_run(inv_id)  # its cells are not taken while its lease runs


def test_an_old_owner_string_is_read_and_waits_for_its_lease(any_store: Store) -> None:  # noqa: F811
    # `host:pid:nonce`, written before owners carried their namespace: which namespace its PID
    # belongs to is unknown, so the lease decides, not the PID.
    old = f"{socket.gethostname()[:24]}:{_dead_pid()}:0123456789ab"
    assert not owner_is_dead(old)
    assert not owner_is_dead("not an owner") and not owner_is_dead(None)
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    any_store.start_run(inv_id, owner=old, lease_s=3600)
    with pytest.raises(TransitionError, match="is running"):
        any_store.start_run(inv_id)


def test_a_regrade_of_an_older_run_does_not_overwrite_a_newer_one(any_store: Store) -> None:  # noqa: F811
    _, invs = _test(any_store, 1)
    inv_id = invs[0].invocation_id
    first = any_store.start_run(inv_id)
    first.status, first.finished_at = Status.completed, utcnow()
    any_store.finish_run(first, invocation={"status": Status.completed}, generations=[], scores=[])
    second = any_store.start_run(inv_id, allowed=frozenset({Status.completed}))
    # A regrade of run 1 read before run 2 started must not touch the running invocation.
    assert not any_store.record_grading(inv_id, [], {"score": 0.1}, run_number=first.number)
    second.status, second.finished_at = Status.completed, utcnow()
    any_store.finish_run(
        second, invocation={"status": Status.completed, "score": 0.9}, generations=[], scores=[]
    )
    assert not any_store.record_grading(inv_id, [], {"score": 0.1}, run_number=first.number)
    assert any_store.get_invocation(inv_id).score == 0.9
    assert any_store.record_grading(inv_id, [], {"score": 0.5}, run_number=second.number)
    assert any_store.get_invocation(inv_id).score == 0.5
