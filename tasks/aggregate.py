"""`aggregate`: build AggregatedResults from the store and write the three parquet files.

Always rebuilt from the store (the ledger), never from in-memory task results, so it is the same
whether the test just ran, was resumed, regraded, cancelled or changed through the API.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from glow import results
from glow.settings import get_settings
from glow.store import Store


@dataclass
class BuiltResults:
    test_id: str
    paths: dict[str, Path]
    leaderboard: list[dict[str, Any]]
    summary: dict[str, Any]
    counts: dict[str, int]
    skipped: int


def results_dir(test_id: str) -> Path:
    return get_settings().results_root / test_id


def build_results(store: Store, test_id: str, out_dir: Path | None = None) -> BuiltResults:
    """Aggregate a test's invocations and generations and write its parquet files atomically."""
    record = store.get_test(test_id)
    standards = [s.name for s in record.rubric.standards]
    invocations = results.invocations_table(store.invocation_rows(test_id), standards)
    generations = results.generations_table(store.generation_rows(test_id))
    categories = _scenario_categories(store, record.test_id) if record.skipped else {}
    aggregated = results.aggregate(
        invocations,
        generations,
        standards,
        record.spec.epochs,
        record.skipped,
        skipped_categories=categories,
        test_id=test_id,
    )
    paths = results.write_results(
        out_dir or results_dir(test_id), invocations, generations, aggregated
    )
    return BuiltResults(
        test_id=test_id,
        paths=paths,
        leaderboard=results.leaderboard(aggregated),
        summary=results.summary(aggregated),
        counts=store.count_invocations(test_id),
        skipped=len(record.skipped),
    )


def _scenario_categories(store: Store, test_id: str) -> dict[str, str]:
    from tasks.run_invocation import context_for

    ctx = context_for(test_id, store)
    return {sid: s.category for sid, s in ctx.scenarios.items()}


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def cost_markdown(built: BuiltResults) -> str:
    """Cost totals and where the files are, for the Prefect UI."""
    s = built.summary
    lines = [
        f"# Results of test `{built.test_id}`",
        "",
        f"**Total cost: {_money(s.get('total_cost_usd'))}**",
        "",
        "| model | cost |",
        "|---|---|",
        *[f"| {m} | {_money(c)} |" for m, c in (s.get("by_model") or {}).items()],
        "",
        "| status | invocations |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(built.counts.items())],
        f"| skipped (modality) | {built.skipped} |",
        "",
    ]
    if s.get("cost_unknown_models"):
        lines.append(
            "Cost is **unknown** (no price in litellm's map and none in the test) for: "
            + ", ".join(s["cost_unknown_models"])
        )
        lines.append("")
    lines.append("Parquet files:")
    lines += [f"- `{name}`: `{path}`" for name, path in built.paths.items()]
    return "\n".join(lines)


async def publish(built: BuiltResults) -> None:
    """The leaderboard as a table artifact, the cost totals as markdown."""
    await acreate_table_artifact(
        key="leaderboard",
        table=built.leaderboard,
        description=f"Leaderboard of test {built.test_id}",
    )
    await acreate_markdown_artifact(
        key="results-summary", markdown=cost_markdown(built), description="Cost totals and files"
    )


@task(name="aggregate", cache_policy=NO_CACHE, persist_result=False)
async def aggregate(test_id: str) -> dict[str, Any]:
    """Rebuild AggregatedResults and publish the leaderboard and cost artifacts."""
    built = await asyncio.to_thread(build_results, Store.from_settings(), test_id)
    await publish(built)
    return {"paths": {k: str(v) for k, v in built.paths.items()}, "summary": built.summary}
