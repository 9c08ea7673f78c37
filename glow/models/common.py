"""Small helpers every model module uses: time, slugs, config hashes and sums of costs."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import (
    BaseModel,
)


def utcnow() -> datetime:
    """Now, timezone-aware in UTC (every timestamp Glow stores)."""
    return datetime.now(UTC)


def slugify(text: str) -> str:
    """Lower-case a-z0-9 and dashes: the only characters Prefect accepts in artifact keys."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "x"


def config_hash(*parts: BaseModel) -> str:
    """Stable hash of resolved config (model + agent + rubric), for trace entries."""
    blob = json.dumps([p.model_dump(mode="json") for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def known_sum(costs: Iterable[float | None]) -> float | None:
    """Sum of costs where unknown stays unknown: one None makes the total None, never 0."""
    total = 0.0
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total
