"""Which model x agent scores best in each category of a test?

    python examples/best_model_per_category.py TEST_ID   # results under GLOW_RESULTS_DIR

Prints one line per category: category, best model, agent, mean score and its 95% CI.
"""

from __future__ import annotations

import sys

from glow import analysis


def main(test_id: str) -> None:
    r = analysis.load(test_id)
    rows = r.aggregated[r.aggregated["category"] != "*"].dropna(subset=["mean_score"])
    best = rows.loc[rows.groupby("category", observed=True)["mean_score"].idxmax()]
    for row in best.itertuples():
        print(
            f"{row.category}\t{row.model}\t{row.agent}\t{row.mean_score:.3f}"
            f"\t[{row.ci95_low:.3f}, {row.ci95_high:.3f}]"
        )


if __name__ == "__main__":
    main(sys.argv[1])
