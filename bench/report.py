"""Printing the comparison and appending it to bench/results.jsonl and bench/RESULTS.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import ChildRun, git_commit

HERE = Path(__file__).resolve().parent
RESULTS_JSONL = HERE / "results.jsonl"
RESULTS_MD = HERE / "RESULTS.md"
MD_HEADER = (
    "| date | commit | mode | cells | conc | latency | runner | wall s | run s | CPU s "
    "| peak RSS MB | wall/bare | wall/inspect | scores |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def fmt(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_table(runs: list[ChildRun]) -> None:
    """Wall (process and in-process run), CPU, peak RSS of every runner."""
    print(
        f"{'runner':<16} {'wall s':>8} {'run s':>8} {'CPU s':>8} {'user':>7} {'sys':>7}"
        f" {'RSS MB':>8} {'rc':>3}"
    )
    for r in runs:
        print(
            f"{r.name:<16} {r.wall_s:8.2f} {fmt(r.run_wall_s, '.2f'):>8} {r.cpu_s:8.2f}"
            f" {r.cpu_user_s:7.2f} {r.cpu_sys_s:7.2f} {r.max_rss_mb:8.0f} {r.returncode:>3}"
        )


def compare_scores(runs: list[ChildRun]) -> tuple[bool, str]:
    """Whether every runner scored every sample the same; a one-line verdict."""
    tables = {r.name: r.report.get("scores") or {} for r in runs}
    names = list(tables)
    missing = [n for n, t in tables.items() if not t]
    if not names or missing:
        return False, f"no scores from {', '.join(missing) or 'any runner'}"
    ids = set().union(*(set(t) for t in tables.values()))
    differ = [i for i in sorted(ids) if len({tables[n].get(i) for n in names}) > 1]
    correct = {n: sum(1 for v in t.values() if v == 1) for n, t in tables.items()}
    detail = ", ".join(f"{n}: {correct[n]}/{len(tables[n])} correct" for n in names)
    if differ:
        return False, f"scores DIFFER on {len(differ)} samples (e.g. {differ[:3]}); {detail}"
    return True, f"all runners agree on {len(ids)} samples; {detail}"


def append(
    mode: str,
    params: dict[str, Any],
    runs: list[ChildRun],
    verdict: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """One JSON line per runner in results.jsonl, one markdown row per runner in RESULTS.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    commit = git_commit()
    by_name = {r.name: r for r in runs}
    bare, inspect = by_name.get("bare"), by_name.get("inspect")
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text("# Bench results\n\nAppended by `python -m bench`.\n\n" + MD_HEADER)
    with RESULTS_JSONL.open("a") as js, RESULTS_MD.open("a") as md:
        for r in runs:
            row = {
                "date": when,
                "commit": commit,
                "mode": mode,
                **params,
                "runner": r.name,
                "returncode": r.returncode,
                "wall_s": round(r.wall_s, 3),
                "run_wall_s": r.run_wall_s and round(r.run_wall_s, 3),
                "cpu_s": round(r.cpu_s, 3),
                "cpu_user_s": round(r.cpu_user_s, 3),
                "cpu_sys_s": round(r.cpu_sys_s, 3),
                "max_rss_mb": round(r.max_rss_mb, 1),
                "verdict": verdict,
                **(extra or {}),
            }
            js.write(json.dumps(row) + "\n")
            vs_bare = ratio(r.run_wall_s, bare.run_wall_s if bare else None)
            vs_insp = ratio(r.run_wall_s, inspect.run_wall_s if inspect else None)
            md.write(
                f"| {when} | {commit} | {mode} | {params.get('cells', '-')} "
                f"| {params.get('concurrency', '-')} | {params.get('latency', '-')} | {r.name} "
                f"| {r.wall_s:.1f} | {fmt(r.run_wall_s)} | {r.cpu_s:.1f} | {r.max_rss_mb:.0f} "
                f"| {fmt(vs_bare, '.2f')} | {fmt(vs_insp, '.2f')} | {verdict.split(';')[0]} |\n"
            )
