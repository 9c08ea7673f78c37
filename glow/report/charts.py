"""The report's charts, drawn with matplotlib (Agg) as inline SVG and as PNG files.

Every drawn mark a reader counts (a bar, a point, a heatmap cell, a forest-plot row) carries an
SVG `id` (matplotlib's `gid`) named `<chart>-<kind>-<i>`, so the browser tests can count what
was drawn rather than trust the data that went in. SVG text stays text (`svg.fonttype: none`):
the page is smaller and the browser's own fonts draw it; nothing is fetched.

matplotlib is imported inside `charts_module()` only, on the first chart drawn: its import is
slow, and commands that never draw must not pay for it.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
FRONTIER = "#D55E00"


@dataclass
class Chart:
    """One drawn chart: its name (file stem and id prefix), title, SVG text and PNG bytes."""

    name: str
    title: str
    svg: str
    png: bytes
    caption: str = ""


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "font.family": ["DejaVu Sans", "sans-serif"],
            "font.size": 10,
            "axes.edgecolor": GRID,
            "axes.labelcolor": INK,
            "axes.titlesize": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "xtick.color": MUTED,
            "ytick.color": INK,
            "axes.grid": False,
            "figure.dpi": 100,
        }
    )
    return plt


def _render(fig: Any, name: str, title: str, caption: str = "") -> Chart:
    """SVG (ids unique to this chart) and PNG of `fig`, then close it."""
    plt = _plt()
    # Hash salt per chart: matplotlib derives clip-path ids from it, and several SVGs share
    # one HTML document, whose ids must not collide.
    plt.rcParams["svg.hashsalt"] = name
    svg_buffer = io.StringIO()
    fig.savefig(svg_buffer, format="svg", bbox_inches="tight")
    png_buffer = io.BytesIO()
    fig.savefig(png_buffer, format="png", dpi=130, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    svg = svg_buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # Scale with the page: drop the fixed size and keep the viewBox.
    svg = re.sub(r'(<svg[^>]*?)\swidth="[^"]*"\s+height="[^"]*"', r"\1", svg, count=1)
    svg = svg.replace("<svg ", f'<svg class="chart" data-chart="{name}" role="img" ', 1)
    return Chart(name=name, title=title, svg=svg, png=png_buffer.getvalue(), caption=caption)


def _height(rows: int, per: float = 0.42, base: float = 1.4) -> float:
    return max(2.2, base + per * rows)


def _known(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def leaderboard_chart(board: pd.DataFrame) -> Chart:
    """Mean score per model x agent with its 95% CI, best on top; a diamond marks the
    failure-inclusive score where it differs from the mean."""
    from glow.report.data import differs

    plt = _plt()
    n = len(board)
    fig, ax = plt.subplots(figsize=(8.2, _height(n)))
    positions = np.arange(n)[::-1]
    for i, row in enumerate(board.itertuples(index=False)):
        y = positions[i]
        score = row.mean_score if _known(row.mean_score) else 0.0
        bar = ax.barh(y, score, height=0.6, color=PALETTE[i % len(PALETTE)], alpha=0.85)
        bar.patches[0].set_gid(f"leaderboard-bar-{i}")
        if _known(row.ci95_low) and _known(row.ci95_high):
            err = ax.errorbar(
                score,
                y,
                xerr=[[score - row.ci95_low], [row.ci95_high - score]],
                fmt="none",
                ecolor=INK,
                elinewidth=1.4,
                capsize=4,
            )
            for line in err.lines[2]:
                line.set_gid(f"leaderboard-ci-{i}")
        text = "-" if not _known(row.mean_score) else f"{row.mean_score:.3f}"
        ax.text(1.02, y, text, va="center", ha="left", color=INK, fontsize=9, clip_on=False)
        if differs(row.mean_score_all, row.mean_score):
            (mark,) = ax.plot(
                row.mean_score_all, y, marker="D", color="white", markeredgecolor=FRONTIER,
                markeredgewidth=1.6, markersize=7, linestyle="none",
            )  # fmt: skip
            mark.set_gid(f"leaderboard-all-{i}")
    ax.set_yticks(positions, list(board["label"]))
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean score (bars: 95% CI)")
    ax.xaxis.grid(True, color=GRID)
    ax.set_axisbelow(True)
    caption = "Error bars: 95% confidence interval of the mean score."
    if any(
        differs(a, b) for a, b in zip(board["mean_score_all"], board["mean_score"], strict=True)
    ):
        ax.plot([], [], marker="D", color="white", markeredgecolor=FRONTIER, linestyle="none",
                label="counting failures as 0")  # fmt: skip
        ax.legend(loc="lower right", frameon=False, fontsize=8)
        caption += " Diamonds: the score when failed invocations count as 0."
    return _render(fig, "leaderboard", "Leaderboard", caption)


def _scatter(
    board: pd.DataFrame, x_column: str, name: str, title: str, xlabel: str, frontier: list[int]
) -> Chart:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = board[x_column].astype("float64").to_numpy()
    ys = board["mean_score"].astype("float64").to_numpy()
    known = ~np.isnan(xs) & ~np.isnan(ys)
    positive = xs[known & (xs > 0)]
    if len(positive) >= 2 and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
    for i, row in enumerate(board.itertuples(index=False)):
        if not known[i]:
            continue
        low = row.ci95_low if _known(row.ci95_low) else ys[i]
        high = row.ci95_high if _known(row.ci95_high) else ys[i]
        ax.errorbar(xs[i], ys[i], yerr=[[ys[i] - low], [high - ys[i]]], fmt="none", alpha=0.35,
                    ecolor=PALETTE[i % len(PALETTE)], elinewidth=3, zorder=1)  # fmt: skip
        (point,) = ax.plot(
            xs[i], ys[i], marker="o", markersize=9, linestyle="none", zorder=3,
            color=PALETTE[i % len(PALETTE)], markeredgecolor="white",
        )  # fmt: skip
        point.set_gid(f"{name}-point-{i}")
        ax.annotate(row.label, (xs[i], ys[i]), xytext=(7, 5), textcoords="offset points",
                    fontsize=8.5, color=INK)  # fmt: skip
    if len(frontier) >= 1:
        fx, fy = xs[frontier], ys[frontier]
        (line,) = ax.step(fx, fy, where="post", color=FRONTIER, linewidth=1.6, linestyle="--",
                          zorder=2, label="cost-quality frontier")  # fmt: skip
        line.set_gid(f"{name}-frontier")
        ax.legend(loc="lower right", frameon=False, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean score")
    # Zoomed to the scores (with their intervals), not 0..1: close models stay apart.
    lows = board["ci95_low"].astype("float64").fillna(board["mean_score"]).to_numpy()
    bottom = np.nanmin(lows, initial=1.0) if len(lows) else 0.0
    ax.set_ylim(max(0.0, bottom - 0.1), 1.02)
    if x_column == "cost_usd":
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:.3g}"))
    if ax.get_xscale() == "linear":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.margins(x=0.15)
    ax.grid(True, color=GRID)
    ax.set_axisbelow(True)
    missing = [lbl for lbl, k in zip(board["label"], known, strict=True) if not k]
    caption = (
        f"Unknown {xlabel.split(' (')[0]} (not drawn): {', '.join(missing)}." if missing else ""
    )
    return _render(fig, name, title, caption)


def cost_chart(board: pd.DataFrame, frontier: list[int]) -> Chart:
    """Score versus total cost, with the cost-quality (Pareto) frontier as a dashed step line."""
    chart = _scatter(board, "cost_usd", "cost", "Score versus cost", "total cost (USD)", frontier)
    note = "Dashed: the cost-quality frontier, the models nothing else beats at their cost or less."
    chart.caption = f"{note} {chart.caption}".strip()
    return chart


def latency_chart(board: pd.DataFrame) -> Chart:
    """Score versus median latency per model x agent."""
    return _scatter(
        board, "latency_p50_s", "latency", "Score versus latency", "median latency (s)", []
    )


def heatmap_chart(table: pd.DataFrame, name: str, title: str, xlabel: str) -> Chart:
    """One coloured, labelled cell per row x column (mean score, 0..1); grey where no score."""
    plt = _plt()
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle

    cmap = LinearSegmentedColormap.from_list(
        "glow", ["#d7301f", "#fdd49e", "#f7f7f7", "#a6dba0", "#1b7837"]
    )
    rows, cols = table.shape
    width = min(14.0, max(6.0, 1.6 + 0.95 * cols))
    fig, ax = plt.subplots(figsize=(width, _height(rows, 0.5, 1.6)))
    values = table.to_numpy(dtype="float64")
    for r in range(rows):
        for c in range(cols):
            value = values[r, c]
            missing = bool(np.isnan(value))
            face = "#ffffff" if missing else cmap(float(value))
            patch = Rectangle((c, rows - 1 - r), 1, 1, facecolor=face, edgecolor="white", lw=2,
                              hatch="///" if missing else None)  # fmt: skip
            if missing:
                patch.set_edgecolor("#d9dde2")
            patch.set_gid(f"{name}-cell-{r}-{c}")
            ax.add_patch(patch)
            text = "–" if np.isnan(value) else f"{value:.2f}"
            ax.text(c + 0.5, rows - 0.5 - r, text, ha="center", va="center", fontsize=8.5,
                    color=INK if np.isnan(value) or 0.2 < value < 0.85 else "white")  # fmt: skip
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    ax.set_xticks(np.arange(cols) + 0.5, [str(c) for c in table.columns], rotation=30, ha="right")
    ax.set_yticks(np.arange(rows) + 0.5, list(table.index)[::-1])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(xlabel)
    return _render(
        fig, name, title, "Mean score; hatched: no score (not run, or nothing completed)."
    )


def failures_chart(table: pd.DataFrame) -> Chart:
    """Failed and terminated invocations per model x agent, stacked by error type."""
    plt = _plt()
    rows = len(table.index)
    fig, ax = plt.subplots(figsize=(8.2, _height(rows)))
    positions = np.arange(rows)[::-1]
    left = np.zeros(rows)
    for j, error_type in enumerate(table.columns):
        counts = table[error_type].to_numpy(dtype="float64")
        bars = ax.barh(positions, counts, left=left, height=0.6, label=str(error_type),
                       color=PALETTE[(j + 3) % len(PALETTE)])  # fmt: skip
        for i, patch in enumerate(bars.patches):
            patch.set_gid(f"failures-bar-{i}-{j}")
        left += counts
    for i, total in enumerate(left):
        ax.text(total, positions[i], f"  {int(total)}", va="center", fontsize=9, color=INK)
    ax.set_yticks(positions, list(table.index))
    ax.set_xlabel("failed or terminated invocations")
    ax.set_xlim(0, max(1.0, float(left.max(initial=0))) * 1.15)
    ax.xaxis.grid(True, color=GRID)
    ax.set_axisbelow(True)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
              title="error type", title_fontsize=8)  # fmt: skip
    return _render(fig, "failures", "Failures by error type")


def forest_chart(frame: pd.DataFrame, labels: list[str], name: str, title: str, xlabel: str,
                 column: str) -> Chart:  # fmt: skip
    """A point with its 95% CI per row (a paired difference), and the zero line: a row whose
    interval misses zero is a difference the data supports."""
    plt = _plt()
    n = len(frame)
    fig, ax = plt.subplots(figsize=(8.2, _height(n, 0.38)))
    positions = np.arange(n)[::-1]
    for i, row in enumerate(frame.to_dict("records")):
        value = row[column]
        low, high = row.get("ci95_low"), row.get("ci95_high")
        significant = _known(low) and _known(high) and (low > 0 or high < 0)
        color = (PALETTE[2] if value > 0 else PALETTE[3]) if significant else MUTED
        if _known(low) and _known(high):
            ax.plot([low, high], [positions[i]] * 2, color=color, linewidth=2)
        (point,) = ax.plot(value, positions[i], marker="o", color=color, linestyle="none")
        point.set_gid(f"{name}-row-{i}")
    ax.axvline(0, color=INK, linewidth=0.8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_yticks(positions, labels)
    ax.set_xlabel(xlabel)
    ax.xaxis.grid(True, color=GRID)
    ax.set_axisbelow(True)
    limit = np.nanmax(np.abs(frame[["ci95_low", "ci95_high", column]].to_numpy(dtype="float64")),
                      initial=0.05)  # fmt: skip
    limit = 0.05 if math.isnan(limit) else limit
    ax.set_xlim(-limit * 1.1, limit * 1.1)
    caption = "Coloured: the 95% interval excludes 0."
    return _render(fig, name, title, caption)


def comparison_chart(boards: list[pd.DataFrame], test_ids: list[str]) -> Chart:
    """Mean score with its 95% CI per model x agent, one bar per test, side by side."""
    plt = _plt()
    labels = list(dict.fromkeys(label for board in boards for label in board["label"]))
    n, width = len(labels), 0.8 / max(len(boards), 1)
    fig, ax = plt.subplots(figsize=(8.2, _height(n * len(boards), 0.3)))
    positions = np.arange(n)[::-1]
    for t, (board, test_id) in enumerate(zip(boards, test_ids, strict=True)):
        rows = board.set_index("label").reindex(labels)
        ys = positions + (len(boards) - 1 - 2 * t) * width / 2
        scores = rows["mean_score"].astype("float64").fillna(0.0).to_numpy()
        low = np.clip(scores - rows["ci95_low"].astype("float64").fillna(0).to_numpy(), 0, None)
        high = np.clip(rows["ci95_high"].astype("float64").fillna(0).to_numpy() - scores, 0, None)
        bars = ax.barh(ys, scores, height=width * 0.9, color=PALETTE[t % len(PALETTE)],
                       xerr=[low, high], ecolor=INK, capsize=3, label=test_id)  # fmt: skip
        for i, patch in enumerate(bars.patches):
            patch.set_gid(f"compare-bar-{t}-{i}")
    ax.set_yticks(positions, labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean score (95% CI)")
    ax.xaxis.grid(True, color=GRID)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
              title="test", title_fontsize=8)  # fmt: skip
    return _render(fig, "compare", "Mean score per test")
