"""Synthetic stores for the api and aggregate modes: a TestRecord plus many invocation rows.

Rows go in through sqlite3 `executemany` with values already in the shape SQLAlchemy stores
(ISO timestamps, JSON text, 0/1 booleans): a million pydantic objects would take minutes, and the
seeding is not what is measured.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.workload import EXACT_RUBRIC
from glow.models import ModelSpec, Rubric, TestRecord, TestSpec, invocation_id_for
from glow.store import Store
from glow.store import tables as t

MODELS = ["model-a", "model-b", "model-c", "model-d"]
CATEGORIES = ["arith", "geo", "code", "logic", "misc"]
STAMP = datetime(2026, 1, 1, tzinfo=UTC)


def _ts(value: datetime) -> str:
    """SQLAlchemy's SQLite DateTime storage format."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def create_test(store: Store, *, scenarios: int, epochs: int) -> str:
    """A TestRecord whose cross product is scenarios x MODELS x 1 agent x epochs."""
    spec = TestSpec(
        name=f"bench-synthetic-{scenarios * len(MODELS) * epochs}",
        scenarios="synthetic.jsonl",
        models=[ModelSpec(name=m, model=f"openai/{m}") for m in MODELS],
        rubric="bench_exact",
        epochs=epochs,
    )
    record = TestRecord(
        test_id=str(uuid.uuid4()),
        name=spec.name,
        spec=spec,
        rubric=Rubric(**EXACT_RUBRIC),
        status="completed",
    )
    store.create_test(record)
    return record.test_id


def _invocation(test_id: str, i: int, s: int, model: str, epoch: int) -> dict[str, Any]:
    failed = i % 50 == 0
    passed = (i * 7919) % 10 < 7
    score = None if failed else (1.0 if passed else 0.0)
    started = STAMP + timedelta(seconds=i)
    return {
        "invocation_id": invocation_id_for(test_id, f"s{s:06d}", model, "direct", epoch),
        "test_id": test_id,
        "scenario_id": f"s{s:06d}",
        "category": CATEGORIES[s % len(CATEGORIES)],
        "model": model,
        "agent": "direct",
        "provider": "openai",
        "epoch": epoch,
        "modalities": '["text"]',
        "status": "failed" if failed else "completed",
        "attempts": 1,
        "output": None if failed else str(s * 3),
        "scores": "{}" if failed else json.dumps({"exact": score}),
        "score": score,
        "passed": None if failed else int(passed),
        "rubric": None if failed else "bench_exact@1",
        "input_tokens": 40 + i % 17,
        "output_tokens": 3 + i % 5,
        "model_cost_usd": None if failed else 1e-6 * (1 + i % 3),
        "judge_cost_usd": None if failed else 0.0,
        "cost_usd": None if failed else 1e-6 * (1 + i % 3),
        "latency_s": 0.2 + (i % 100) / 1000,
        "error_type": "InternalServerError" if failed else None,
        "error_message": "simulated failure" if failed else None,
        "created_at": _ts(STAMP),
        "started_at": _ts(started),
        "finished_at": _ts(started + timedelta(seconds=0.2)),
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _rows(test_id: str, scenarios: int, epochs: int) -> Iterator[dict[str, Any]]:
    i = 0
    for s in range(scenarios):
        for model in MODELS:
            for epoch in range(1, epochs + 1):
                yield _invocation(test_id, i, s, model, epoch)
                i += 1


def _generation(inv: dict[str, Any]) -> dict[str, Any]:
    return {
        "generation_id": str(uuid.uuid4()),
        "test_id": inv["test_id"],
        "invocation_id": inv["invocation_id"],
        "run_id": str(uuid.uuid4()),
        "role": "model",
        "model": inv["model"],
        "litellm_model": f"openai/{inv['model']}",
        "provider": "openai",
        "standard": None,
        "input_tokens": inv["input_tokens"],
        "output_tokens": inv["output_tokens"],
        "cost_usd": inv["model_cost_usd"],
        "latency_s": inv["latency_s"],
        "created_at": inv["finished_at"],
    }


def seed_invocations(
    db: Path, test_id: str, *, scenarios: int, epochs: int, generations: bool, batch: int = 20_000
) -> int:
    """Insert scenarios x len(MODELS) x epochs invocations (and one generation each)."""
    inv_cols = [c.name for c in t.invocations.columns]
    gen_cols = [c.name for c in t.generations.columns]
    inv_sql = (
        f"INSERT INTO invocations ({', '.join(inv_cols)}) VALUES ({', '.join('?' * len(inv_cols))})"
    )
    gen_sql = (
        f"INSERT INTO generations ({', '.join(gen_cols)}) VALUES ({', '.join('?' * len(gen_cols))})"
    )
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    total = 0
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        conn.executemany(inv_sql, [[r[c] for c in inv_cols] for r in chunk])
        if generations:
            gens = [_generation(r) for r in chunk]
            conn.executemany(gen_sql, [[g[c] for c in gen_cols] for g in gens])
        conn.commit()

    for row in _rows(test_id, scenarios, epochs):
        chunk.append(row)
        if len(chunk) >= batch:
            flush()
            total += len(chunk)
            chunk = []
    if chunk:
        flush()
        total += len(chunk)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return total
