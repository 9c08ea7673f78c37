"""A model's score over the nightly runs of a test (every completed run of the same name).

    python examples/score_over_runs.py TEST_NAME [MODEL]

Reads the run list from the store (GLOW_DATABASE_URL) and the results from GLOW_RESULTS_DIR.
Prints one line per run, oldest first: test id, when it started, model, agent, mean score and
its 95% CI.
"""

from __future__ import annotations

import sys

from glow import analysis


def main(name: str, model: str | None = None) -> None:
    test_ids = analysis.runs(name)
    if not test_ids:
        sys.exit(f"no completed run of a test named {name!r}")
    r = analysis.load(test_ids)
    started = r.invocations.groupby("test_id", observed=True)["created_at"].min()
    overall = r.overall()
    if model is not None:
        overall = overall[overall["model"] == model]
    for test_id in test_ids:  # oldest first
        for row in overall[overall["test_id"] == test_id].itertuples():
            print(
                f"{test_id}\t{started[test_id]:%Y-%m-%d %H:%M}\t{row.model}\t{row.agent}"
                f"\t{row.mean_score:.3f}\t[{row.ci95_low:.3f}, {row.ci95_high:.3f}]"
            )


if __name__ == "__main__":
    main(*sys.argv[1:3])
