"""One standard's score for one output: what a kind returns, completed by `grade()`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StandardOutcome(BaseModel):
    """A standard's score in memory (its stored form is `glow.models.StandardScore`).

    A kind returns the score and, ideally, why (`score`, `rationale`); `grade()` completes it
    with the standard it belongs to (`name`, `kind`, `weight`, `threshold`) and, when the kind
    failed, its `error`. `score` is bounded so that a buggy kind fails loudly here instead of
    skewing an average.
    """

    model_config = ConfigDict(frozen=True)

    score: float = Field(ge=0, le=1)
    rationale: str | None = None
    name: str | None = Field(None, description="The standard's name (set by grade()).")
    kind: str | None = Field(None, description="The standard's kind (set by grade()).")
    weight: float | None = Field(None, description="Its share of the overall score.")
    threshold: float | None = Field(None, description="The standard passes at or above this.")
    error: str | None = Field(None, description="Set when the kind failed (score is then 0).")

    @property
    def passed(self) -> bool | None:
        """Whether the score reaches the standard's threshold (None before `grade()` sets it)."""
        return None if self.threshold is None else self.score >= self.threshold

    @classmethod
    def no_output(cls) -> StandardOutcome:
        """The outcome for a run that produced no final answer (failed or empty)."""
        return cls(score=0.0, rationale="no output to grade")

    @classmethod
    def of(cls, ok: bool, rationale: str | None = None) -> StandardOutcome:
        """A pass/fail outcome: 1.0 or 0.0."""
        return cls(score=1.0 if ok else 0.0, rationale=rationale)
