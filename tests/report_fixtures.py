"""A test's parquet files built from known rows, for the report tests.

The invocations and generations go through Glow's own `results.invocations_table`,
`generations_table`, `aggregate` and `write_results`, so the files are what a real run writes;
only the rows are chosen here, so every number the report shows can be worked out by hand.
pairwise.parquet and regression.parquet are written with their documented columns (another
module computes them; the report only reads them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from glow import results

STANDARDS = ["exact", "judge"]

# (model, cost per call, latency) and, per scenario, (status, score, error_type).
MODELS = {
    "alpha": (0.010, 1.0),
    "beta": (0.002, 0.4),
    "gamma": (0.020, 2.0),  # dearer and worse than alpha: off the frontier
}
SCENARIOS = {
    # scenario: category, {model: (status, score or None, error_type)}
    "s1": ("math", {"alpha": ("completed", 1.0, None), "beta": ("completed", 1.0, None),
                    "gamma": ("completed", 1.0, None)}),
    "s2": ("math", {"alpha": ("completed", 1.0, None), "beta": ("completed", 0.0, None),
                    "gamma": ("completed", 0.0, None)}),
    "s3": ("text", {"alpha": ("completed", 0.5, None), "beta": ("failed", None, "RateLimitError"),
                    "gamma": ("completed", 0.5, None)}),
    "s4": ("text", {"alpha": ("completed", 1.0, None), "beta": ("failed", None, "Timeout"),
                    "gamma": ("terminated", None, None)}),
    "s5": ("code", {"alpha": ("completed", 0.0, None), "beta": ("completed", 0.0, None),
                    "gamma": ("failed", None, "Timeout")}),
}  # fmt: skip
PASS_THRESHOLD = 0.5
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


# An output that would run a script if the page did not escape it.
HOSTILE_OUTPUT = "<b>1</b></script><script>window.pwned = 1</script><!--"


def _output(status: str, model: str, scenario_id: str) -> str | None:
    if status != "completed":
        return None
    if (model, scenario_id) == ("alpha", "s1"):
        return HOSTILE_OUTPUT
    return f"answer of {model} to {scenario_id}"


def invocation_rows(test_id: str, scenarios: dict[str, Any] = SCENARIOS) -> list[dict[str, Any]]:
    rows = []
    for scenario_id, (category, cells) in scenarios.items():
        for model, (status, score, error_type) in cells.items():
            cost, latency = MODELS[model]
            rows.append(
                {
                    "invocation_id": f"{test_id}-{scenario_id}-{model}",
                    "test_id": test_id,
                    "scenario_id": scenario_id,
                    "category": category,
                    "model": model,
                    "agent": "direct",
                    "provider": "openai",
                    "modalities": ["text"],
                    "created_at": CREATED,
                    "status": status,
                    "attempts": 1,
                    "output": _output(status, model, scenario_id),
                    "scores": {} if score is None else {"exact": score, "judge": score},
                    "score": score,
                    "passed": None if score is None else score >= PASS_THRESHOLD,
                    "cost_usd": cost,
                    "model_cost_usd": cost,
                    "judge_cost_usd": 0.0,
                    "latency_s": latency,
                    "error_type": error_type,
                    "error_message": None if status == "completed" else f"{status}: {error_type}",
                }
            )
    return rows


def write_test(root: Path, test_id: str, rows: list[dict[str, Any]] | None = None) -> Path:
    """Write invocations/generations/aggregated parquet for `test_id` under `root`."""
    rows = invocation_rows(test_id) if rows is None else rows
    generations = [
        {
            "test_id": test_id,
            "invocation_id": r["invocation_id"],
            "generation_id": f"gen-{r['invocation_id']}",
            "created_at": CREATED,
            "run_id": f"run-{r['invocation_id']}",
            "role": "model",
            "model": r["model"],
            "litellm_model": f"openai/{r['model']}",
            "provider": "openai",
            "cost_usd": r["cost_usd"],
            "latency_s": r["latency_s"],
        }
        for r in rows
    ]
    invocations = results.invocations_table(rows, STANDARDS)
    generations_table = results.generations_table(generations)
    aggregated = results.aggregate(invocations, generations_table, STANDARDS, 1, test_id=test_id)
    out = root / test_id
    results.write_results(out, invocations, generations_table, aggregated)
    return out


def write_pairwise(out: Path) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            ("alpha", "direct", "beta", "direct", "*", 5, 5, 0.7, 0.2, 0.5, 0.2, 0.1, 0.9, 0.03,
             "paired bootstrap", 3, 2, 0),
            ("alpha", "direct", "gamma", "direct", "*", 5, 5, 0.7, 0.3, 0.4, 0.25, -0.1, 0.9, 0.2,
             "paired bootstrap", 2, 3, 0),
            ("alpha", "direct", "beta", "direct", "math", 2, 2, 1.0, 0.5, 0.5, 0.5, -0.5, 1.5, 0.5,
             "paired bootstrap", 1, 1, 0),
        ],
        columns=["model_a", "agent_a", "model_b", "agent_b", "category", "n_pairs", "n_clusters",
                 "mean_a", "mean_b", "mean_diff", "stderr", "ci95_low", "ci95_high", "p_value",
                 "method", "wins", "ties", "losses"],
    )  # fmt: skip
    frame.to_parquet(out / "pairwise.parquet")
    return frame


def write_regression(out: Path, test_id: str, base: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            (test_id, base, "alpha", "direct", "*", 5, 0.6, 0.7, 0.1, 0.05, 0.0, 0.2, 0.06, 0, 1,
             0.05, 0.05, 0.0),
            (test_id, base, "beta", "direct", "*", 5, 0.5, 0.2, -0.3, 0.1, -0.5, -0.1, 0.01, 2, 0,
             0.01, 0.01, 0.0),
        ],
        columns=["test_id", "base_test_id", "model", "agent", "category", "n_pairs", "mean_base",
                 "mean_new", "delta", "stderr", "ci95_low", "ci95_high", "p_value",
                 "newly_failing", "newly_passing", "cost_base_usd", "cost_new_usd",
                 "cost_delta_usd"],
    )  # fmt: skip
    frame.to_parquet(out / "regression.parquet")
    return frame
