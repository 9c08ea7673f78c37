"""A test's results: its parquet files, their schemas, and AggregatedResults.

A finished (or partly finished) test is exported as parquet files, by default under
`data/results/<test_id>/`. This docstring is the reference of their columns; the code is in:

- `glow.results.schema`: the Arrow schemas of invocations, generations and aggregated, *derived*
  from the pydantic models in `glow.models` by `arrow_schema` (so the files and the store never
  drift apart), and building those tables from store rows or columns.
- `glow.results.aggregated`: AggregatedResults (`aggregate`) and the views people read of it
  (`leaderboard`, `summary`, `failures_marker`).
- `glow.results.files`: staging a file in full and publishing it atomically (`stage_result`,
  `write_results`).
- `glow.stats`: the statistics (clustered standard errors, pass@k, paired comparisons);
  `glow.comparison`: the pairwise and regression tables, whose schemas are fixed there.

Every file carries `glow_schema_version` (currently "1") and `glow_table` in its parquet
key-value metadata. The names callers use are re-exported here (`from glow import results`).

Parquet schema
==============

Types: str -> string, int -> int64, float -> float64, bool -> bool, datetime -> timestamp[us, UTC],
enums and literals -> string, lists of strings/enums -> list<string>, dicts and free-form values ->
a JSON-encoded string. A column is nullable exactly when the pydantic field is Optional.

``invocations.parquet`` -- one row per invocation (`glow.models.Invocation` minus ``runs`` and
``scores``):

- ``invocation_id``: stable id of the cell (test, scenario, model, agent, epoch).
- ``test_id``, ``scenario_id``, ``category``: which test and scenario; category from its metadata.
- ``model``, ``agent``, ``provider``: model display name, agent name, litellm provider.
- ``epoch``: 1-based repetition number of the cell.
- ``modalities``: list<string>, the modalities the scenario's input uses.
- ``status``: queued / running / completed / failed / terminated.
- ``attempts``: how many runs were started.
- ``output``: the latest run's final output (null when none).
- ``score``: weighted overall rubric score, 0..1 (null when not graded).
- ``passed``: score >= the rubric's pass threshold (null when not graded).
- ``rubric``: ``name@version`` of the grading the scores come from.
- ``input_tokens``, ``output_tokens``: tokens of the model's calls.
- ``model_cost_usd``, ``judge_cost_usd``, ``cost_usd``: as stored on the invocation; null means
  the price is unknown, never zero.
- ``latency_s``: wall time of the latest run.
- ``error_type``, ``error_message``: the last error, if any.
- ``created_at``, ``started_at``, ``finished_at``: UTC timestamps.
- ``score__<standard>``: float64, one per rubric standard, 0..1; null when not graded or the
  standard did not apply.

``generations.parquet`` -- one row per model call (`glow.models.Generation`):

- ``generation_id``, ``test_id``, ``invocation_id``, ``run_id``: what the call belongs to.
- ``role``: ``model`` (the model under test) or ``judge`` (an llm_judge standard's call).
- ``model``, ``litellm_model``, ``provider``: who was called.
- ``standard``: the standard a judge call graded (null for model calls).
- ``input_tokens``, ``output_tokens``: usage reported by the provider.
- ``cost_usd``: null when the price is unknown -- never 0.
- ``latency_s``: call latency; ``created_at``: UTC timestamp.

``aggregated.parquet`` -- AggregatedResults (`glow.models.AggregatedRow` minus
``standard_means``): one row per (test, model, agent) with ``category`` = ``"*"``, and one per
(test, model, agent, category):

- ``test_id``, ``model``, ``agent``, ``category``: the group.
- ``n``: invocations in the group; ``n_completed``, ``n_failed``, ``n_terminated``, ``n_queued``,
  ``n_running``: by status; ``n_skipped``: cells not run because the model lacks a modality.
- ``mean_score``: mean ``score`` over completed invocations with a score.
- ``stderr``: standard error of that mean, clustered by scenario (its epochs are one cluster) or
  by the test's ``cluster_by`` metadata key (`glow.stats.clustered_stderr`, CR1); without epochs
  or ``cluster_by`` it is the sample standard deviation / sqrt(count). Null below 2 clusters.
- ``ci95_low``, ``ci95_high``: mean -/+ 1.96 stderr, clamped to [0, 1].
- ``pass_rate``: fraction of completed, graded invocations that passed.
- ``mean_score_all``: the mean with failed invocations counted as 0: over the completed ones
  with a score and the failed ones, each failed invocation scoring 0. ``mean_score`` leaves
  failures out, which flatters a model that fails on the hard items; when the two differ, the
  leaderboard marks the row. Failed invocations left out of both: those that failed in grading
  (``n_grading_failed``; their score is unknown, not 0) and those of a category no standard of
  the rubric grades (a completed one would have no score either).
- ``stderr_all``, ``ci95_low_all``, ``ci95_high_all``: as ``stderr`` and ``ci95_*``, over the
  scores of ``mean_score_all``.
- ``pass_rate_all``: the pass rate with the same failed invocations counted as not passed.
- ``n_grading_failed``: failed invocations whose error type is a grading error (``judge_error``:
  the judge call failed after retries or its reply had no score; ``judge_budget_exhausted``:
  the budget refused the judge call). Their output is kept; ``glow run --resume`` or
  ``glow regrade`` grades them again without calling the model.
- ``pass_at_k``, ``k``: with epochs > 1, k = epochs and pass@k is the mean over the group's
  scenarios of the unbiased estimator 1 - C(n-c, k) / C(n, k) (n = graded completed epochs of the
  scenario, c = passes; k is clipped to n, which makes it "did any epoch pass"). Null, k = 1, when
  epochs == 1.
- ``input_tokens``, ``output_tokens``: summed over the group's invocations.
- ``model_cost_usd``, ``judge_cost_usd``: summed over the ``model`` / ``judge`` generations of
  the group's invocations (every run's, including earlier runs of re-run invocations and late
  runs that were discarded: every call paid for); null when any of them has an unknown cost.
- ``cost_usd``: model + judge; null when either is unknown.
- ``cost_unknown_calls``: number of generations whose cost is unknown.
- ``latency_p50_s``, ``latency_p95_s``: percentiles of completed invocations' ``latency_s``.
- ``score__<standard>``: mean of that standard's score over completed invocations.

``pairwise.parquet`` -- paired model comparison (`glow.comparison.pairwise_table`): for every two
model x agent combinations, one row overall (``category`` = ``"*"``) and one per category. Each
unordered pair appears once, a before b in (model, agent) order. Pairs are the (scenario, epoch)
cells both a and b completed with a score (failed, terminated and unfinished cells are left out).

- ``model_a``, ``agent_a``, ``model_b``, ``agent_b``, ``category``: what is compared, and where.
- ``n_pairs``: paired cells; ``n_clusters``: clusters among them (scenarios, or values of the
  test's ``cluster_by`` key).
- ``mean_a``, ``mean_b``: mean scores over the pairs; ``mean_diff``: mean of a - b.
- ``stderr``: clustered standard error of ``mean_diff``; ``ci95_low``, ``ci95_high``:
  mean_diff -/+ t(0.975, n_clusters - 1) stderr; ``p_value``: two-sided paired t-test with
  n_clusters - 1 degrees of freedom; ``method`` = ``paired-t-clustered`` (see `glow.stats`).
  Null below 2 clusters.
- ``wins``, ``ties``, ``losses``: pairs where a scored higher, the same, lower.

``regression.parquet`` -- the test against the previous completed run of the same test name
(`glow.comparison.regression_table`; only written when there is one), per model x agent,
overall and per category, over the cells (scenario, model, agent, epoch) both runs have:

- ``test_id``, ``base_test_id``, ``model``, ``agent``, ``category``.
- ``n_pairs``: cells both runs completed with a score; ``mean_base``, ``mean_new``: their means;
  ``delta``: mean of new - base, with ``stderr``, ``ci95_low``, ``ci95_high``, ``p_value`` as in
  ``pairwise.parquet``.
- ``newly_failing``, ``newly_passing``: cells that passed (completed and passed) in the base run
  and not in this one, and the reverse; a failed or terminated cell does not pass.
- ``cost_base_usd``, ``cost_new_usd``: ``cost_usd`` summed over those shared cells that finished
  (null when one is unknown); ``cost_delta_usd``: new - base.
"""

from __future__ import annotations

from glow.results.aggregated import (
    FAILURES_MARKER,
    LEADERBOARD_FIELDS,
    aggregate,
    failures_marker,
    leaderboard,
    summary,
)
from glow.results.files import StagedFile, stage_result, write_results
from glow.results.schema import (
    OVERALL,
    SCHEMA_VERSION,
    SCORE_PREFIX,
    aggregated_schema,
    arrow_schema,
    generations_table,
    generations_table_from_columns,
    invocations_table,
    invocations_table_from_columns,
    score_column,
)

# Private, re-exported for the tests that build tables of models of their own with it.
from glow.results.schema import _rows_table as _rows_table

__all__ = [
    "FAILURES_MARKER",
    "LEADERBOARD_FIELDS",
    "OVERALL",
    "SCHEMA_VERSION",
    "SCORE_PREFIX",
    "StagedFile",
    "aggregate",
    "aggregated_schema",
    "arrow_schema",
    "failures_marker",
    "generations_table",
    "generations_table_from_columns",
    "invocations_table",
    "invocations_table_from_columns",
    "leaderboard",
    "score_column",
    "stage_result",
    "summary",
    "write_results",
]
