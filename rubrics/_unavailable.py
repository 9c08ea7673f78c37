"""A standard that cannot be computed for an infrastructure reason: an error, never a score."""

from __future__ import annotations

from glow.models import JUDGE_ERROR


class GradingUnavailable(Exception):
    """Raised when a standard's score cannot be known: its judge could not be reached after
    retries, kept answering without a score, was refused by the budget, or is not configured.

    Unlike a grader that scores low (or a buggy kind, which scores 0 with its error), this
    stops the grading: a judge outage must not turn into zeros that reorder a leaderboard.
    `error_type` is one of `glow.models.GRADING_ERRORS`; `standard` is filled in by `grade()`.
    """

    def __init__(
        self, message: str, *, error_type: str = JUDGE_ERROR, standard: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.standard = standard
