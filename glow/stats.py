"""Statistics of eval scores: standard errors, 95% CIs, clustered errors, pass@k, paired tests.

Follows Miller 2024, "Adding Error Bars to Evals" (arXiv 2411.00640):

- The standard error of a mean score is the sample standard deviation / sqrt(n), and its 95% CI
  is mean -/+ 1.96 stderr (`mean_ci95`), as AggregatedResults reports it.
- When scores are not independent (epochs of one scenario, scenarios sharing a source named by
  the test's ``cluster_by`` metadata key), the standard error is *clustered*: the Liang-Zeger
  sandwich with the usual small-sample factor G/(G-1) (CR1), ``sqrt(G/(G-1) * sum_c (sum_{i in c}
  (x_i - mean))^2) / n`` for G clusters and n items (`clustered_stderr`). With one item per
  cluster it is exactly the unclustered standard error, so nothing changes for a test without
  epochs or `cluster_by`.
- Two models answering the same items are compared on their *paired* differences
  d_i = a_i - b_i (`paired_difference`): the mean difference, its clustered standard error, a
  95% CI mean -/+ t(0.975, G-1) stderr, and a two-sided p-value from a paired t-test on the
  differences with G-1 degrees of freedom (the cluster-robust t-test). The t distribution rather
  than 1.96 because a test often has few clusters; with one item per cluster it is the textbook
  paired t-test. The CI excludes 0 exactly when p < 0.05.
- pass@k with epochs is the mean over scenarios of the unbiased estimator 1 - C(n-c, k) / C(n, k)
  (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

AggregatedResults needs these per group over whole columns: `grouped_clustered_stderr`,
`grouped_pass_at_k` and `cluster_labels` compute them for every group at once.

numpy, pandas and the standard library (no scipy): the Student t distribution is computed here
from the regularized incomplete beta function (`t_sf`, `t_quantile`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

Z95 = 1.96
PAIRED_METHOD = "paired-t-clustered"
# Differences smaller than this are ties (scores are floats from the same rubric).
TIE_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- Student t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast on the side of the mean; use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value P(|T| >= |t|)."""
    return min(1.0, 2.0 * t_sf(abs(t), df))


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1), by bisection on `t_sf`."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile q must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    target = 1.0 - q  # upper tail
    low, high = 0.0, 1.0
    while t_sf(high, df) > target:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_sf(mid, df) > target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# --------------------------------------------------------------------------- means and errors


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)]


def stderr(values: Sequence[float] | np.ndarray) -> float | None:
    """Sample standard deviation / sqrt(n) of the non-NaN values; None below 2 values."""
    array = _finite(values)
    if len(array) < 2:
        return None
    return float(np.std(array, ddof=1) / math.sqrt(len(array)))


def mean_ci95(mean: float | None, se: float | None) -> tuple[float | None, float | None]:
    """mean -/+ 1.96 stderr clamped to [0, 1] (scores live there); None when either is None."""
    if mean is None or se is None or math.isnan(mean) or math.isnan(se):
        return None, None
    return max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se)


def _cluster_codes(clusters: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} values")
    labels = np.asarray(clusters)
    if labels.dtype.kind in "iu" and (n == 0 or labels.min() >= 0):
        # Integer codes (the comparison tables' case): renumber densely in O(n), no sort.
        present = np.bincount(labels) > 0 if n else np.zeros(0, dtype=bool)
        return (np.cumsum(present) - 1)[labels] if n else labels.astype(np.int64)
    _, codes = np.unique(labels.astype(object).astype(str), return_inverse=True)
    return codes.reshape(-1)


def clustered_stderr(
    values: Sequence[float] | np.ndarray, clusters: Sequence[Any] | np.ndarray | None = None
) -> float | None:
    """Cluster-robust (CR1) standard error of the mean of `values`.

    ``sqrt(G/(G-1) * sum_c (sum_{i in c} (x_i - mean))^2) / n``; `clusters` labels each value's
    cluster (None: every value its own cluster, which gives `stderr` exactly). None below 2
    clusters, where the spread between clusters is unknown. NaN values must be removed first.
    """
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).any():
        raise ValueError("clustered_stderr: drop NaN values (and their cluster labels) first")
    n = len(array)
    codes = _cluster_codes(clusters, n)
    g = int(codes.max()) + 1 if n else 0
    if g < 2:
        return None
    residual_sums = np.bincount(codes, weights=array - array.mean(), minlength=g)
    variance = g / (g - 1) * float(np.sum(residual_sums**2)) / n**2
    return math.sqrt(variance)


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of a and b over the same items (see `paired_difference`)."""

    n_pairs: int
    n_clusters: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    stderr: float | None
    ci95_low: float | None
    ci95_high: float | None
    p_value: float | None
    method: str
    wins: int
    ties: int
    losses: int

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, as the comparison tables' columns take them."""
        return asdict(self)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> PairedResult:
    """Compare paired scores a_i and b_i (the same item, e.g. scenario x epoch, for both).

    Pairs where either score is NaN are dropped. Returns the mean of each side, the mean
    difference a - b, its clustered standard error (`clustered_stderr` over `clusters`; None:
    each pair is its own cluster), the 95% CI mean -/+ t(0.975, G-1) stderr and the two-sided
    p-value of the paired t-test with G-1 degrees of freedom (G = number of clusters), and the
    pairs where a is higher (wins), equal within `TIE_TOLERANCE` (ties) or lower (losses).

    Below 2 clusters the stderr, CI and p-value are None. When every cluster's differences sum to
    the mean (stderr 0), the CI is the mean itself and p is 1 if it is 0, else 0.
    """
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired_difference: {len(a_arr)} scores for a but {len(b_arr)} for b")
    keep = ~(np.isnan(a_arr) | np.isnan(b_arr))
    if clusters is not None and len(clusters) != len(a_arr):
        raise ValueError(f"{len(clusters)} cluster labels for {len(a_arr)} pairs")
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    n = len(a_arr)
    codes = _cluster_codes(None if clusters is None else np.asarray(clusters)[keep], n)
    diff = a_arr - b_arr
    wins = int(np.sum(diff > TIE_TOLERANCE))
    losses = int(np.sum(diff < -TIE_TOLERANCE))
    g = int(codes.max()) + 1 if n else 0  # codes are dense
    if n == 0:
        return PairedResult(0, 0, None, None, None, None, None, None, None, PAIRED_METHOD, 0, 0, 0)
    mean = float(diff.mean())
    se = clustered_stderr(diff, codes)
    low = high = p_value = None
    if se is not None:
        if se <= 1e-15:
            low = high = mean
            p_value = 1.0 if abs(mean) <= TIE_TOLERANCE else 0.0
        else:
            half = t_quantile(0.975, g - 1) * se
            low, high = mean - half, mean + half
            p_value = t_two_sided_p(mean / se, g - 1)
    return PairedResult(
        n_pairs=n,
        n_clusters=g,
        mean_a=float(a_arr.mean()),
        mean_b=float(b_arr.mean()),
        mean_diff=mean,
        stderr=se,
        ci95_low=low,
        ci95_high=high,
        p_value=p_value,
        method=PAIRED_METHOD,
        wins=wins,
        ties=n - wins - losses,
        losses=losses,
    )


# --------------------------------------------------------------------------- whole-column groups


def cluster_labels(scenario_ids: pd.Series, clusters: Mapping[str, str] | None) -> np.ndarray:
    """Each row's cluster as an integer code: its scenario, or its `cluster_by` value.

    `clusters` maps scenario_id -> value of the test's `cluster_by` metadata key (None: every
    scenario is a cluster, so its epochs are one); a scenario missing from it is a cluster of its
    own. Works on the distinct scenario ids only (a categorical column stays cheap at a million
    rows).
    """
    codes, uniques = pd.factorize(scenario_ids)
    if clusters is None:
        return codes
    labels = [
        f"value={clusters[sid]}" if sid in clusters else f"scenario={sid}"
        for sid in map(str, uniques)
    ]
    return pd.factorize(np.asarray(labels, dtype=object)[codes])[0]


def grouped_clustered_stderr(
    groups: np.ndarray, clusters: np.ndarray, values: np.ndarray
) -> pd.Series:
    """`clustered_stderr` of every group at once (AggregatedResults' groups), NaN values left
    out: a Series indexed by group code, NaN where a group has fewer than 2 clusters.

    `groups` and `clusters` are integer codes per row; whole columns, no Python per row.
    """
    keep = ~np.isnan(values)
    frame = pd.DataFrame({"g": groups[keep], "c": clusters[keep], "x": values[keep]})
    frame["r"] = frame["x"] - frame.groupby("g")["x"].transform("mean")
    per_cluster = frame.groupby(["g", "c"])["r"].sum()
    squares = (per_cluster**2).groupby(level=0).sum()
    n_clusters = per_cluster.groupby(level=0).size()
    n = frame.groupby("g").size()
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = n_clusters / (n_clusters - 1) * squares / n.astype(np.float64) ** 2
    return np.sqrt(variance).where(n_clusters >= 2)


def grouped_pass_at_k(
    groups: np.ndarray, scenarios: np.ndarray, passed: np.ndarray, k: int
) -> pd.Series:
    """pass@k of every group at once: per group, the mean over its scenarios of the unbiased
    estimator 1 - C(n-c, k) / C(n, k) (n = the scenario's graded epochs, c = its passes), with k
    clipped to each scenario's n, which makes it "did any epoch pass".

    `groups`, `scenarios` (integer codes) and `passed` (0/1) are the graded rows; returns a
    Series indexed by group code.
    """
    width = int(scenarios.max()) + 1 if len(scenarios) else 1
    per = pd.Series(passed).groupby(groups * width + scenarios).agg(["count", "sum"])
    n = per["count"].to_numpy(dtype=np.float64)
    c = per["sum"].to_numpy(dtype=np.float64)
    k_eff = np.minimum(n, k)
    # C(n-c, k) / C(n, k) = prod_{i<k} (n-c-i) / (n-i): a short loop over k (= epochs) instead
    # of per-scenario big-integer binomials; a factor <= 0 means some epoch must have passed.
    ratio = np.ones_like(n)
    for i in range(k):
        active = i < k_eff
        factor = np.clip((n - c - i) / np.maximum(n - i, 1.0), 0.0, None)
        ratio = np.where(active, ratio * factor, ratio)
    per_scenario = pd.Series(1.0 - ratio, index=per.index.to_numpy() // width)
    return per_scenario.groupby(level=0).mean()
