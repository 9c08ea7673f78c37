"""Many callers on one record at once, from threads or from processes (tests/test_store_races.py).

Each op is a module-level function `op(store, arg, worker) -> answer` so that a spawned process
can run it by name. A worker runs one op per round, every worker of a round released together
by a barrier, and answers with a small tuple the test then checks: who won, what each loser was
told. Processes open their own Store on the same database (the schema is already migrated).
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from glow.errors import NotFound, TransitionError
from glow.models import Generation, Run, Status, utcnow
from glow.store import COMPLETABLE, RERUNNABLE, TERMINABLE, Store

Answer = tuple[Any, ...]
Op = Callable[[Store, Any, int], Answer]

_stores: dict[str, Store] = {}


def store_for(url: str) -> Store:
    """One Store per database per process (like the API, a runner or a worker)."""
    if url not in _stores:
        _stores[url] = Store(url, create=False)
    return _stores[url]


# ------------------------------------------------------------------ ops


def op_start(store: Store, invocation_id: str, worker: int) -> Answer:
    """`invocation_run`'s store part: open a run of a queued (or finished) invocation."""
    try:
        run = store.start_run(invocation_id, allowed=RERUNNABLE, owner=f"worker-{worker}")
    except TransitionError as exc:
        return ("refused", str(exc))
    return ("won", run.run_id, run.number)


def _generation(run: Run, test_id: str, tag: str) -> Generation:
    return Generation(
        test_id=test_id,
        invocation_id=run.invocation_id,
        run_id=run.run_id,
        model="m",
        litellm_model="openai/x",
        provider="openai",
        input_tokens=3,
        output_tokens=4,
        cost_usd=0.25,
        generation_id=f"{run.run_id}-{tag}",
    )


def op_end(store: Store, arg: tuple[str, str, dict[str, Any]], worker: int) -> Answer:
    """Worker 0 finishes the open run (completed, one paid generation); the others terminate."""
    test_id, invocation_id, run_data = arg
    if worker == 0:
        run = Run.model_validate(run_data)
        run.status, run.output, run.finished_at = Status.completed, "done", utcnow()
        status = store.finish_run(
            run,
            invocation={"status": Status.completed, "output": "done", "finished_at": utcnow()},
            generations=[_generation(run, test_id, "model")],
            scores=[],
        )
        return ("finish", status.value)
    try:
        inv = store.transition(
            invocation_id,
            Status.terminated,
            allowed=TERMINABLE,
            values={"error_type": "Terminated", "error_message": f"by worker {worker}"},
        )
    except TransitionError as exc:
        return ("refused", str(exc))
    return ("terminated", inv.status.value, inv.error_message)


def op_complete(store: Store, arg: tuple[str, str], worker: int) -> Answer:
    """`invocation_complete`'s store part: a run of its own, finished completed at once."""
    test_id, invocation_id = arg
    try:
        run = store.start_run(invocation_id, allowed=COMPLETABLE, owner=f"worker-{worker}")
    except TransitionError as exc:
        return ("refused", str(exc))
    run.status, run.output, run.finished_at = Status.completed, f"w{worker}", utcnow()
    status = store.finish_run(
        run,
        invocation={"status": Status.completed, "output": f"w{worker}", "finished_at": utcnow()},
        generations=[_generation(run, test_id, "note")],
        scores=[],
    )
    # A discarded run comes back terminated, whatever the invocation's status now is.
    return ("finish", status.value, run.run_id, f"w{worker}", run.status.value)


def op_update_test(store: Store, arg: tuple[str, int], worker: int) -> Answer:
    """Each worker changes one field of the same test; none may be lost."""
    test_id, round_ = arg
    if worker % 4 == 0:
        store.update_test(test_id, status="running" if round_ % 2 else "completed")
    elif worker % 4 == 1:
        store.update_test(test_id, flow_run_id=f"flow-{round_}-{worker}")
    elif worker % 4 == 2:
        store.update_test(test_id, name=f"name-{round_}-{worker}")
    else:
        spec = store.get_test(test_id).spec
        store.update_test(test_id, spec=spec.model_copy(update={"tags": [f"t{round_}-{worker}"]}))
    return ("done", worker)


def op_promote(store: Store, arg: tuple[str, list[str]], worker: int) -> Answer:
    """Worker w promotes draft w (each brings a model of its own); the last one, if there is no
    draft for it, changes the test's status meanwhile, as a flow starting or ending does."""
    from glow.api.cells import promote_draft
    from glow.api.errors import ApiError

    test_id, draft_ids = arg
    if worker >= len(draft_ids):
        store.update_test(test_id, status="running")
        return ("status", worker)
    try:
        inv = promote_draft(store, store.get_draft(draft_ids[worker]))
    except (ApiError, NotFound, TransitionError) as exc:
        return ("refused", str(exc))
    return ("promoted", inv.invocation_id, inv.model)


def op_promote_same(store: Store, arg: tuple[str, str], worker: int) -> Answer:
    """Every worker promotes the same draft: one invocation, the others told why not."""
    from glow.api.cells import promote_draft
    from glow.api.errors import ApiError

    _, draft_id = arg
    try:
        inv = promote_draft(store, store.get_draft(draft_id))
    except ApiError as exc:
        return ("refused", exc.status, str(exc))
    except NotFound as exc:
        return ("refused", 404, str(exc))
    return ("promoted", inv.invocation_id)


def op_edit_draft(store: Store, arg: str, worker: int) -> Answer:
    """Each worker edits one field of the same draft (the API's invocation_draft)."""
    from glow.api.invocations import invocation_draft
    from glow.api.schemas import DraftEdit

    fields: dict[str, Any] = {"draft_id": arg}
    if worker % 3 == 0:
        fields["epoch"] = 7
    elif worker % 3 == 1:
        fields["params"] = {"temperature": 0.5}
    else:
        fields["scenario_id"] = "q2"
    invocation_draft(DraftEdit.model_validate(fields), store)
    return ("done", worker)


def op_cancel_test(store: Store, arg: tuple[str, list[dict[str, Any]]], worker: int) -> Answer:
    """Worker 0 cancels the test (terminate_unfinished); each other worker finishes one cell."""
    test_id, runs = arg
    if worker == 0:
        return ("cancel", store.terminate_unfinished(test_id, "the test was cancelled"))
    run = Run.model_validate(runs[worker - 1])
    run.status, run.output, run.finished_at = Status.completed, "done", utcnow()
    status = store.finish_run(
        run,
        invocation={"status": Status.completed, "output": "done", "finished_at": utcnow()},
        generations=[_generation(run, test_id, "model")],
        scores=[],
    )
    return ("finish", run.invocation_id, status.value, run.status.value)


def op_test_run(store: Store, test_id: str, worker: int) -> Answer:
    """`/test/run`'s store part: claim the test for one run-test flow."""
    try:
        record = store.begin_test_run(test_id)
    except TransitionError as exc:
        return ("refused", str(exc))
    return ("won", record.status)


# ------------------------------------------------------------------ drivers


def _work(
    url: str,
    op: Op,
    args: Sequence[Any],
    worker: int,
    barrier: Any,
    out: Any,
) -> None:
    store = store_for(url)
    answers: list[Answer] = []
    for arg in args:
        barrier.wait(timeout=120)
        try:
            answers.append(op(store, arg, worker))
        except BaseException:  # noqa: BLE001 - a crash is an answer the test reports
            answers.append(("crash", traceback.format_exc()))
    out(worker, answers)


def hammer(
    url: str, op: Op, args: Sequence[Any], workers: int, *, processes: bool = False
) -> list[list[Answer]]:
    """Run `op` on every arg (one round each) from `workers` threads or processes at once.

    Returns, per round, every worker's answer (in worker order).
    """
    results: dict[int, list[Answer]] = {}
    if processes:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(workers)
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_process_main, args=(url, op, list(args), w, barrier, queue))
            for w in range(workers)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            worker, answers = queue.get(timeout=600)
            results[worker] = answers
        for p in procs:
            p.join(timeout=60)
    else:
        tbarrier = threading.Barrier(workers)
        lock = threading.Lock()

        def out(worker: int, answers: list[Answer]) -> None:
            with lock:
                results[worker] = answers

        threads = [
            threading.Thread(target=_work, args=(url, op, args, w, tbarrier, out))
            for w in range(workers)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    return [[results[w][i] for w in range(workers)] for i in range(len(args))]


def _process_main(url: str, op: Op, args: list[Any], worker: int, barrier: Any, queue: Any) -> None:
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    _work(url, op, args, worker, barrier, lambda w, answers: queue.put((w, answers)))
