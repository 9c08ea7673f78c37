"""What one standard says about one output: a score in 0..1 and, ideally, why."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StandardOutcome(BaseModel):
    """The result a grading function returns for one standard.

    `score` is bounded so that a buggy kind fails loudly here instead of skewing an average.
    """

    model_config = ConfigDict(frozen=True)

    score: float = Field(ge=0, le=1)
    rationale: str | None = None

    @classmethod
    def no_output(cls) -> StandardOutcome:
        """The outcome for a run that produced no final answer (failed or empty)."""
        return cls(score=0.0, rationale="no output to grade")

    @classmethod
    def of(cls, ok: bool, rationale: str | None = None) -> StandardOutcome:
        """A pass/fail outcome: 1.0 or 0.0."""
        return cls(score=1.0 if ok else 0.0, rationale=rationale)
