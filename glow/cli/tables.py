"""The tables and summaries the `glow` commands print (rich, imported on first use)."""

from __future__ import annotations

from typing import Any

from glow.cli.common import console


def _money(value: float | None) -> str:
    # NaN is how pandas rows (`glow results --categories`) carry an unknown cost
    return "unknown" if value is None or value != value else f"${value:.4f}"


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, fmt)


def print_leaderboard(rows: list[dict[str, Any]], title: str) -> None:
    """Leaderboard rows (or AggregatedResults rows) as a table. A score marked with the
    failures marker leaves failed invocations out; the `failed = 0` columns count them as 0."""
    from rich.table import Table

    from glow.results import FAILURES_MARKER, failures_marker

    table = Table(title=title, title_justify="left")
    for col in (
        "model",
        "agent",
        "n",
        "done",
        "failed",
        "score",
        "95% CI",
        "pass rate",
        "score (failed = 0)",
        "pass (failed = 0)",
        "cost",
        "p50 latency",
    ):
        table.add_column(col, justify="left" if col in ("model", "agent") else "right")
    marked = False
    for row in rows:
        ci = f"{_num(row.get('ci95_low'), '.2f')}-{_num(row.get('ci95_high'), '.2f')}"
        marker = row["marker"] if "marker" in row else failures_marker(row)
        marked = marked or bool(marker)
        table.add_row(
            str(row["model"]),
            str(row["agent"]),
            str(row["n"]),
            str(row.get("completed", row.get("n_completed"))),
            str(row.get("failed", row.get("n_failed"))),
            _num(row.get("mean_score")) + marker,
            ci,
            _num(row.get("pass_rate"), ".1%") + marker,
            _num(row.get("mean_score_all")),
            _num(row.get("pass_rate_all"), ".1%"),
            _money(row.get("cost_usd")),
            f"{_num(row.get('latency_p50_s'), '.2f')}s",
        )
    console().print(table)
    if marked:
        console().print(
            f"{FAILURES_MARKER} score and pass rate leave failed invocations out; "
            "'failed = 0' counts them as 0 (mean_score_all, pass_rate_all in aggregated.parquet)",
            highlight=False,
            soft_wrap=True,
        )


def print_summary(summary: dict[str, Any], paths: dict[str, Any]) -> None:
    """The cost totals (per model, and which models have no known price) and the file paths."""
    console().print(f"[bold]Total cost:[/] {_money(summary.get('total_cost_usd'))}")
    for model, cost in (summary.get("by_model") or {}).items():
        console().print(f"  {model}: {_money(cost)}")
    unknown = summary.get("cost_unknown_models") or []
    if unknown:
        console().print(
            f"[yellow]cost unknown for {', '.join(unknown)}: no price in litellm's map; add "
            "`prices:` to the model in the test file[/]"
        )
    for name, path in paths.items():
        console().print(f"  {name}: {path}", highlight=False, soft_wrap=True)


def print_failures(test_id: str, store: Any = None) -> None:
    """Failed cells grouped by error type: how many, and one example message each."""
    from rich.markup import escape

    from glow.models import Status
    from glow.store import Store

    store = store or Store.from_settings()
    failed = store.list_invocations(test_id, status=Status.failed)
    if not failed:
        return
    groups: dict[str, list[Any]] = {}
    for invocation in failed:
        groups.setdefault(invocation.error_type or "unknown", []).append(invocation)
    console().print(f"\n[bold red]{len(failed)} failed cells[/], by error type:")
    for error_type, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        example = members[0]
        message = " ".join((example.error_message or "").split())
        if len(message) > 300:
            message = message[:297] + "..."
        console().print(
            escape(
                f"  {error_type}: {len(members)} (e.g. {example.model} on "
                f"{example.scenario_id}: {message or 'no message'})"
            ),
            highlight=False,
            soft_wrap=True,
        )


def print_regression(rows: list[dict[str, Any]], test_id: str, base_test_id: str | None) -> None:
    """`glow compare`'s table: per model x agent (x category), the paired score delta with its
    95% CI and p-value (coloured when significant), newly failing/passing cells, cost delta."""
    from rich.table import Table

    table = Table(title=f"{test_id} against {base_test_id}", title_justify="left")
    columns = ("model", "agent", "category", "pairs", "base", "new", "delta", "95% CI", "p")
    for col in (*columns, "newly failing", "newly passing", "cost delta"):
        table.add_column(
            col, justify="left" if col in columns[:3] else "right", no_wrap=col == "95% CI"
        )
    for row in rows:
        delta = row["delta"]
        colour = (
            ""
            if delta is None or row["p_value"] is None or row["p_value"] >= 0.05
            else ("green" if delta > 0 else "red")
        )
        cost = row["cost_delta_usd"]
        table.add_row(
            str(row["model"]),
            str(row["agent"]),
            str(row["category"]),
            str(row["n_pairs"]),
            _num(row["mean_base"]),
            _num(row["mean_new"]),
            f"[{colour}]{_num(delta, '+.3f')}[/]" if colour else _num(delta, "+.3f"),
            f"[{_num(row['ci95_low'], '+.3f')}, {_num(row['ci95_high'], '+.3f')}]",
            _num(row["p_value"]),
            str(row["newly_failing"]),
            str(row["newly_passing"]),
            "unknown" if cost is None else f"{cost:+.6f}",
        )
    console().print(table)
