"""What does one correct answer cost, per model x agent?

    python examples/cost_per_correct_answer.py TEST_ID

Cost is every finished invocation's `cost_usd` (model and judge calls), correct answers are the
completed invocations that passed the rubric. Prints model, agent, correct answers, total cost
and cost per correct answer ("unknown" when a price is unknown, "-" with no correct answer).
"""

from __future__ import annotations

import sys

from glow import analysis


def main(test_id: str) -> None:
    inv = analysis.load(test_id).invocations
    finished = inv[inv["status"].isin(["completed", "failed", "terminated"])]
    groups = finished.groupby(["model", "agent"], observed=True)
    table = groups.agg(
        correct=("passed", lambda s: int(s.fillna(False).sum())),
        cost=("cost_usd", lambda s: s.sum() if s.notna().all() else float("nan")),
    )
    for (model, agent), row in table.iterrows():
        total = "unknown" if row.cost != row.cost else f"${row.cost:.6f}"
        if row.cost != row.cost:
            per = "unknown"
        elif row.correct == 0:
            per = "-"
        else:
            per = f"${row.cost / row.correct:.4g}"
        print(f"{model}\t{agent}\t{row.correct}\t{total}\t{per}")


if __name__ == "__main__":
    main(sys.argv[1])
