"""Simulated models: how often each is right and how long it takes to answer.

A request's `model` picks a `Profile` (litellm sends `openai/sim-strong` as `sim-strong`). The
built-in ones cover the quickstart and the tests; `--profile` and `profiles=` add or override
them, and `--latency` fixes every profile's latency (benches want a known floor).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class Profile:
    """How one simulated model behaves: how often it is right and how long it takes.

    `kind` is "answer" (scenario answers, tools, judging) or "echo" (repeat the last user text).
    """

    accuracy: float
    latency_s: float
    latency_jitter_s: float = 0.0
    kind: Literal["answer", "echo"] = "answer"

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be within 0..1, got {self.accuracy}")
        if self.latency_s < 0 or self.latency_jitter_s < 0:
            raise ValueError("latency and jitter must be >= 0")
        if self.kind not in ("answer", "echo"):
            raise ValueError(f"kind must be 'answer' or 'echo', got {self.kind!r}")

    def draw_latency(self, rng: random.Random) -> float:
        """Mean latency plus uniform jitter in [-jitter, +jitter], never negative."""
        if not self.latency_jitter_s:
            return self.latency_s
        return max(0.0, self.latency_s + rng.uniform(-self.latency_jitter_s, self.latency_jitter_s))

    def flag(self, name: str) -> str:
        """The `--profile` flag value that recreates this profile under `name`."""
        return f"{name}={self.accuracy}:{self.latency_s}:{self.latency_jitter_s}:{self.kind}"


BUILTIN_PROFILES: dict[str, Profile] = {
    "sim-strong": Profile(accuracy=0.9, latency_s=0.25, latency_jitter_s=0.05),
    "sim-fast": Profile(accuracy=0.55, latency_s=0.05, latency_jitter_s=0.01),
    "sim-judge": Profile(accuracy=0.9, latency_s=0.02, latency_jitter_s=0.005),
    "sim-echo": Profile(accuracy=1.0, latency_s=0.0, kind="echo"),
}


def parse_profile(spec: str) -> tuple[str, Profile]:
    """Parse `name=accuracy:latency[:jitter[:kind]]`, e.g. `sim-slow=0.5:1.0` or `x=1:0:0:echo`."""
    name, sep, rest = spec.partition("=")
    fields = rest.split(":")
    if not sep or not name.strip() or not 2 <= len(fields) <= 4:
        raise ValueError(f"--profile {spec!r}: expected name=accuracy:latency[:jitter[:kind]]")
    try:
        accuracy, latency = float(fields[0]), float(fields[1])
        jitter = float(fields[2]) if len(fields) > 2 and fields[2] else 0.0
    except ValueError as exc:
        raise ValueError(f"--profile {spec!r}: accuracy, latency and jitter are numbers") from exc
    kind = fields[3] if len(fields) > 3 else "answer"
    return name.strip(), Profile(accuracy, latency, jitter, kind)  # type: ignore[arg-type]


def resolve_profiles(
    profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
    latency: float | None = None,
) -> dict[str, Profile]:
    """Built-in profiles, overridden/extended by `profiles`, then `latency` (fixed) applied to all.

    `profiles` is a mapping name -> Profile (or -> "accuracy:latency[...]"), or flag strings.
    """
    resolved = dict(BUILTIN_PROFILES)
    if isinstance(profiles, Mapping):
        for name, value in profiles.items():
            resolved[name] = (
                value if isinstance(value, Profile) else parse_profile(f"{name}={value}")[1]
            )
    elif profiles is not None:
        resolved.update(parse_profile(spec) for spec in profiles)
    if latency is not None:
        if latency < 0:
            raise ValueError("--latency must be >= 0")
        resolved = {
            name: replace(p, latency_s=latency, latency_jitter_s=0.0)
            for name, p in resolved.items()
        }
    return resolved
