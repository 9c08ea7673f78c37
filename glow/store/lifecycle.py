"""An invocation's lifecycle in the store: runs started and finished, transitions, leases.

Every status change is one conditional write (an UPDATE whose WHERE holds only if the row is
still as read), so the lifecycle holds even with several runners, the API and the CLI writing
at once: of two callers racing for the same change exactly one wins, and the other re-reads
and decides again or is refused with the status it found.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, bindparam, insert, or_, select, update

from glow.errors import NotFound, TransitionError
from glow.models import FINAL_STATUSES, Generation, Invocation, Run, StandardScore, Status, utcnow
from glow.store import tables as t
from glow.store.engine import StoreEngine
from glow.store.owner import owner_is_dead
from glow.store.rows import KEY, RACE_ROUNDS, as_row, check_columns, select_by, update_by

# Which statuses each operation may start from (the seed's lifecycle).
RUNNABLE = frozenset({Status.queued, Status.failed})
RERUNNABLE = frozenset({Status.queued, Status.failed, Status.completed, Status.terminated})
TERMINABLE = frozenset({Status.queued, Status.running})
COMPLETABLE = frozenset({Status.queued, Status.running, Status.failed})


class LeaseHeld(TransitionError):
    """The invocation is running under another live runner's lease."""

    def __init__(self, message: str, expires_at: datetime) -> None:
        super().__init__(message)
        self.expires_at = expires_at


@functools.cache
def _start_update(takeover: str) -> Update:
    """`start_run`'s write: UPDATE invocations SET <the parameters' columns> WHERE the row is
    still as read (invocation_id = :_key, status = :_status, attempts = :_attempts) and, for a
    takeover, its owner is still the dead one (`dead`) or its lease still expired (`expired`)."""
    inv_c = t.invocations.c
    statement = update(t.invocations).where(
        inv_c.invocation_id == bindparam(KEY),
        inv_c.status == bindparam("_status"),
        inv_c.attempts == bindparam("_attempts"),
    )
    if takeover == "dead":
        statement = statement.where(inv_c.lease_owner == bindparam("_owner"))
    elif takeover == "expired":  # and not renewed since it was read
        statement = statement.where(
            or_(
                inv_c.lease_expires_at.is_(None),
                inv_c.lease_expires_at < bindparam("_now", type_=t.UTCDateTime()),
            )
        )
    return statement


@functools.cache
def _finish_update() -> Update:
    """UPDATE invocations SET <the parameters' columns> WHERE invocation_id = :_key AND status =
    :_running AND attempts = :_number: `finish_run`'s write, a no-op once the run is not live."""
    inv_c = t.invocations.c
    return update(t.invocations).where(
        inv_c.invocation_id == bindparam(KEY),
        inv_c.status == bindparam("_running"),
        inv_c.attempts == bindparam("_number"),
    )


class Lifecycle(StoreEngine):
    """Runs, status transitions and runner leases of invocations (part of `glow.store.Store`)."""

    def start_run(
        self,
        invocation_id: str,
        *,
        allowed: frozenset[Status] = RUNNABLE,
        owner: str | None = None,
        lease_s: float = 3600.0,
    ) -> Run:
        """Move an invocation to running and open a new run for it, atomically.

        A `running` invocation whose lease has expired (its runner died) may be taken over.
        """
        owner = owner or uuid.uuid4().hex
        for _ in range(RACE_ROUNDS):
            run = self._try_start_run(invocation_id, allowed, owner, lease_s)
            if run is not None:
                return run
        raise TransitionError(
            f"invocation {invocation_id} kept changing while it was being started; try again"
        )

    def _try_start_run(
        self, invocation_id: str, allowed: frozenset[Status], owner: str, lease_s: float
    ) -> Run | None:
        """One attempt of `start_run`: read, decide, then one conditional UPDATE that holds only
        if the row is still as read (same status and attempts, and for a takeover the same
        expired lease or dead owner). None if another caller changed it first."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                select_by(
                    t.invocations,
                    "invocation_id",
                    ("status", "attempts", "lease_expires_at", "lease_owner"),
                ),
                {KEY: invocation_id},
            ).first()
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            status = Status(row.status)
            expired = row.lease_expires_at is None or row.lease_expires_at < now
            dead = not expired and owner_is_dead(row.lease_owner)
            stale = status is Status.running and (expired or dead)
            if status is Status.running and not stale and status not in allowed:
                raise LeaseHeld(
                    f"invocation {invocation_id} is running (its runner holds it until "
                    f"{row.lease_expires_at:%H:%M:%S} UTC)",
                    row.lease_expires_at,
                )
            if status not in allowed and not stale:
                raise TransitionError(
                    f"invocation {invocation_id} is {status.value}; it can be run only when "
                    f"{' or '.join(sorted(s.value for s in allowed))}"
                )
            number = int(row.attempts) + 1
            takeover = ("dead" if dead else "expired") if stale else ""
            won = conn.execute(
                _start_update(takeover),
                {
                    KEY: invocation_id,
                    "_status": status,
                    "_attempts": row.attempts,
                    "_owner": row.lease_owner,
                    "_now": now,
                    "status": Status.running,
                    "attempts": number,
                    "started_at": now,
                    "finished_at": None,
                    "error_type": None,
                    "error_message": None,
                    "lease_owner": owner,
                    "lease_expires_at": now + timedelta(seconds=lease_s),
                },
            ).rowcount
            if not won:
                return None
            if stale:
                # The dead runner's open run is closed as terminated, its partial trace kept.
                conn.execute(
                    update(t.runs)
                    .where(t.runs.c.invocation_id == invocation_id)
                    .where(t.runs.c.status == Status.running)
                    .values(
                        status=Status.terminated,
                        finished_at=now,
                        error_type="RunnerLost",
                        error_message="the runner holding this run stopped without finishing",
                    )
                )
            run = Run(invocation_id=invocation_id, number=number, started_at=now)
            conn.execute(insert(t.runs), as_row(run, t.runs))
        return run

    def finish_run(
        self,
        run: Run,
        *,
        invocation: dict[str, Any],
        generations: list[Generation],
        scores: list[StandardScore],
    ) -> Status:
        """Record a finished run in one transaction.

        If the invocation is no longer running this run (terminated, completed or taken over
        while it was in flight), the late result is discarded: the invocation is left as it
        is, the run ends `terminated` (`run.status` too, so the caller can tell) keeping its
        trace and output, and its generations are stored all the same: they were paid for.
        Returns the invocation's status after the write.
        """
        check_columns(t.invocations, invocation)
        with self.engine.begin() as conn:
            # One conditional write decides: the run is live only if the invocation is still
            # running this very run (a terminate, a takeover or a complete moved it on).
            live = conn.execute(
                _finish_update(),
                {
                    **invocation,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    KEY: run.invocation_id,
                    "_running": Status.running,
                    "_number": run.number,
                },
            ).rowcount
            if generations:
                # Every generation was paid for: a discarded run's stay too, under its run_id.
                conn.execute(insert(t.generations), [as_row(g, t.generations) for g in generations])
            if live:
                conn.execute(update_by(t.runs, "run_id"), {**as_row(run, t.runs), KEY: run.run_id})
                if scores:
                    conn.execute(insert(t.scores), [as_row(s, t.scores) for s in scores])
                return Status(invocation.get("status", Status.running))
            current = conn.execute(
                select_by(t.invocations, "invocation_id", ("status",)), {KEY: run.invocation_id}
            ).scalar()
            if current is None:
                raise NotFound(f"invocation {run.invocation_id!r} not found")
            status = Status(current)
            run.status = Status.terminated
            if run.error_type is None:
                run.error_type = "Discarded"
                run.error_message = (
                    f"the invocation was {status.value} when this run finished; "
                    "its result was discarded"
                )
            conn.execute(
                update(t.runs)
                .where(t.runs.c.run_id == run.run_id)
                .values(
                    status=Status.terminated,
                    finished_at=run.finished_at or utcnow(),
                    output=run.output,
                    error_type=run.error_type,
                    error_message=run.error_message,
                    trace=as_row(run, t.runs)["trace"],
                )
            )
            return status

    def complete_run(
        self,
        run: Run,
        *,
        allowed: frozenset[Status],
        invocation: dict[str, Any],
        scores: list[StandardScore],
    ) -> Run:
        """Open and finish a run recorded by hand (`invocation_complete`) in ONE transaction:
        the run, the invocation's new values and the score rows are written together or not at
        all, so a refused or failing write leaves no phantom run and no half-updated invocation.

        The run gets the next number; a run still in flight loses the invocation (its late
        result is discarded by `finish_run`). Refused with TransitionError unless the status is
        in `allowed`, or if the invocation changed between the read and the write.
        """
        check_columns(t.invocations, invocation)
        inv_c = t.invocations.c
        with self.engine.begin() as conn:
            row = conn.execute(
                select_by(t.invocations, "invocation_id", ("status", "attempts")),
                {KEY: run.invocation_id},
            ).first()
            if row is None:
                raise NotFound(f"invocation {run.invocation_id!r} not found")
            status = Status(row.status)
            if status not in allowed:
                raise TransitionError(
                    f"invocation {run.invocation_id} is {status.value}; it can be completed only "
                    f"when {' or '.join(sorted(s.value for s in allowed))}"
                )
            run.number = int(row.attempts) + 1
            changed = conn.execute(
                update(t.invocations)
                .where(inv_c.invocation_id == run.invocation_id)
                .where(inv_c.status == row.status)
                .where(inv_c.attempts == row.attempts)
                .values(
                    **invocation,
                    attempts=run.number,
                    started_at=run.started_at,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if changed.rowcount != 1:
                raise TransitionError(
                    f"invocation {run.invocation_id} changed while it was being completed; "
                    "read it again and retry"
                )
            conn.execute(insert(t.runs), as_row(run, t.runs))
            if scores:
                conn.execute(insert(t.scores), [as_row(s, t.scores) for s in scores])
        return run

    def save_trace(self, run: Run) -> None:
        """Persist a run's partial trace while it is still going (kept if it is terminated)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.runs)
                .where(t.runs.c.run_id == run.run_id)
                .values(trace=as_row(run, t.runs)["trace"])
            )

    def transition(
        self,
        invocation_id: str,
        to: Status,
        *,
        allowed: frozenset[Status],
        values: dict[str, Any] | None = None,
    ) -> Invocation:
        """Guarded status change (terminate, complete, requeue); refused with the current status."""
        inv_c = t.invocations.c
        for _ in range(RACE_ROUNDS):
            now = utcnow()
            extra: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
            if to in FINAL_STATUSES:
                extra["finished_at"] = now
            with self.engine.begin() as conn:
                won = conn.execute(
                    update(t.invocations)
                    .where(inv_c.invocation_id == invocation_id, inv_c.status.in_(allowed))
                    .values(status=to, **extra, **(values or {}))
                ).rowcount
                if won and to is Status.terminated:
                    conn.execute(
                        update(t.runs)
                        .where(t.runs.c.invocation_id == invocation_id)
                        .where(t.runs.c.status == Status.running)
                        .values(status=Status.terminated, finished_at=now)
                    )
                row = conn.execute(
                    select(t.invocations).where(inv_c.invocation_id == invocation_id)
                ).first()
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            if won:
                return Invocation.model_validate(row._mapping)
            status = Status(row.status)
            if status not in allowed:
                raise TransitionError(
                    f"invocation {invocation_id} is {status.value}; cannot make it {to.value}"
                )
            # It came back to an allowed status after the UPDATE missed it: decide again.
        raise TransitionError(
            f"invocation {invocation_id} kept changing while it was being made {to.value}; "
            "try again"
        )

    def terminated_among(self, invocation_ids: list[str]) -> list[str]:
        """Which of these invocations are terminated now (one query, for the cancel watcher)."""
        if not invocation_ids:
            return []
        inv_c = t.invocations.c
        with self._read() as conn:
            return list(
                conn.execute(
                    select(inv_c.invocation_id)
                    .where(inv_c.invocation_id.in_(invocation_ids))
                    .where(inv_c.status == Status.terminated)
                ).scalars()
            )

    def renew_leases(self, invocation_ids: list[str], owner: str, lease: timedelta) -> None:
        """Extend the leases this runner holds (its heartbeat)."""
        if not invocation_ids:
            return
        inv_c = t.invocations.c
        with self.engine.begin() as conn:
            conn.execute(
                update(t.invocations)
                .where(inv_c.invocation_id.in_(invocation_ids))
                .where(inv_c.lease_owner == owner)
                .where(inv_c.status == Status.running)
                .values(lease_expires_at=utcnow() + lease)
            )

    def test_for_flow_run(self, flow_run_id: str) -> str | None:
        with self._read() as conn:
            return conn.execute(
                select(t.tests.c.test_id).where(t.tests.c.flow_run_id == flow_run_id)
            ).scalar()

    def terminate_unfinished(self, test_id: str, reason: str) -> int:
        """Mark every queued or running invocation of a test terminated (a cancelled test)."""
        inv_c = t.invocations.c
        now = utcnow()
        with self.engine.begin() as conn:
            # One conditional UPDATE: a cell that finished meanwhile keeps its status.
            count = conn.execute(
                update(t.invocations)
                .where(inv_c.test_id == test_id)
                .where(inv_c.status.in_([Status.queued, Status.running]))
                .values(
                    status=Status.terminated,
                    finished_at=now,
                    error_type="Cancelled",
                    error_message=reason,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            ).rowcount
            conn.execute(
                update(t.runs)
                .where(t.runs.c.status == Status.running)
                .where(
                    t.runs.c.invocation_id.in_(
                        select(inv_c.invocation_id)
                        .where(inv_c.test_id == test_id)
                        .where(inv_c.status == Status.terminated)
                    )
                )
                .values(status=Status.terminated, finished_at=now)
            )
        return int(count)
