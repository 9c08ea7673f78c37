"""Where do two standards of the rubric disagree on the same answers?

    python examples/standard_disagreement.py TEST_ID

For every two standards that graded the same completed invocations (e.g. an LLM judge and a
`contains` check on free text), prints both names, how many invocations both graded, how many
they disagree on (one scored >= 0.5, the other < 0.5) and the correlation of their scores.
"""

from __future__ import annotations

import sys
from itertools import combinations

from glow import analysis


def main(test_id: str) -> None:
    r = analysis.load(test_id)
    inv = r.invocations[r.invocations["status"] == "completed"]
    for a, b in combinations(r.standards, 2):
        both = inv[[f"score__{a}", f"score__{b}"]].dropna()
        if both.empty:
            continue
        x, y = both.iloc[:, 0], both.iloc[:, 1]
        disagree = int(((x >= 0.5) != (y >= 0.5)).sum())
        corr = x.corr(y) if len(both) > 1 else float("nan")
        print(f"{a}\t{b}\tn={len(both)}\tdisagree={disagree}\tcorr={corr:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
