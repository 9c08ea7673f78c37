"""Grading in the store: score rows (every grading kept), generations and what judges cost."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from glow.models import Generation, StandardScore, Status
from glow.store import tables as t
from glow.store.engine import StoreEngine
from glow.store.rows import as_row


class Grading(StoreEngine):
    """Scores and generations of invocations (part of `glow.store.Store`)."""

    def record_grading(
        self,
        invocation_id: str,
        scores: list[StandardScore],
        invocation: dict[str, Any],
        *,
        run_number: int | None = None,
    ) -> bool:
        """Add a (re)grading: new score rows, earlier ones kept; the invocation shows the latest.

        With `run_number` (the graded run's number) it is one conditional write: nothing is
        written, and False returned, if the invocation is running again or its latest run is
        another one (a re-run finished meanwhile: its own grading stands).
        """
        inv_c = t.invocations.c
        statement = update(t.invocations).where(inv_c.invocation_id == invocation_id)
        if run_number is not None:
            statement = statement.where(
                inv_c.attempts == run_number, inv_c.status != Status.running
            )
        with self.engine.begin() as conn:
            if not conn.execute(statement.values(**invocation)).rowcount:
                return False  # nothing was written
            if scores:
                conn.execute(insert(t.scores), [as_row(s, t.scores) for s in scores])
        return True

    def add_generations(self, generations: list[Generation]) -> None:
        """Store model calls (a cell's or a judge's): each one was paid for."""
        if generations:
            with self.engine.begin() as conn:
                conn.execute(insert(t.generations), [as_row(g, t.generations) for g in generations])

    def scores_for(self, invocation_id: str) -> list[StandardScore]:
        """Every score row of an invocation, of every grading, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(t.scores)
                .where(t.scores.c.invocation_id == invocation_id)
                .order_by(t.scores.c.score_id)
            ).all()
        return [StandardScore.model_validate(r._mapping) for r in rows]

    def judge_cost(self, invocation_id: str, run_id: str | None = None) -> list[float | None]:
        """The cost of each judge generation of an invocation (of one run, given `run_id`)."""
        query = select(t.generations.c.cost_usd).where(
            t.generations.c.invocation_id == invocation_id, t.generations.c.role == "judge"
        )
        if run_id:
            query = query.where(t.generations.c.run_id == run_id)
        with self._read() as conn:
            return list(conn.execute(query).scalars())
