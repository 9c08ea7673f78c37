"""AggregatedResults rows: one per model x agent, overall or per category."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
)


class AggregatedRow(BaseModel):
    """One row of AggregatedResults: a model x agent, overall (category "*") or per category.

    Per-standard means are kept in `standard_means` and become `score__<standard>` parquet columns.
    """

    test_id: str
    model: str
    agent: str
    category: str = "*"
    n: int
    n_completed: int
    n_failed: int
    n_terminated: int
    n_queued: int
    n_running: int
    n_skipped: int = 0
    mean_score: float | None
    stderr: float | None
    ci95_low: float | None
    ci95_high: float | None
    pass_rate: float | None
    mean_score_all: float | None = Field(
        None, description="Mean score with failed invocations counted as 0 (see glow.results)."
    )
    stderr_all: float | None = None
    ci95_low_all: float | None = None
    ci95_high_all: float | None = None
    pass_rate_all: float | None = Field(
        None, description="Pass rate with failed invocations counted as not passed."
    )
    n_grading_failed: int = Field(
        0, description="Failed in grading (GRADING_ERRORS): score unknown, in neither mean."
    )
    pass_at_k: float | None = Field(None, description="Set when epochs > 1; k = epochs.")
    k: int = 1
    input_tokens: int
    output_tokens: int
    model_cost_usd: float | None
    judge_cost_usd: float | None
    cost_usd: float | None
    cost_unknown_calls: int = Field(0, description="Generations whose price is unknown.")
    latency_p50_s: float | None
    latency_p95_s: float | None
    standard_means: dict[str, float | None] = Field(default_factory=dict)
