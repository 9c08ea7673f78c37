"""The faults a simulated model injects, as data: which kinds, when, and how they are parsed.

What each kind looks like on the wire is in `responses.py` (status codes, bodies, headers) and
`app.py` (a reset connection, a hang); which request gets which fault is `Simulator.draw_fault`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from glow.simulator._json import loads

FaultKind = Literal[
    "429",
    "429_no_retry_after",
    "500",
    "502",
    "503",
    "reset",
    "hang",
    "malformed",
    "empty",
    "slow_stream",
    "401",
    "400",
    "context",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
RETRY_AFTER_FORMS = ("seconds", "http-date", "ms")
_FAULT_OPTIONS = (
    "rates",
    "script",
    "fail_first",
    "fail_kind",
    "per_prompt",
    "match",
    "retry_after_s",
    "retry_after_form",
    "hang_s",
    "stream_chunk_delay_s",
    "seed",
)


@dataclass(frozen=True)
class Faults:
    """The faults one model injects: a scripted start, then random faults at given rates.

    Why: the runner's retry, timeout, masking and concurrency code must be proven against the
    failures real providers produce, over real HTTP. Kinds (`FAULT_KINDS`):

    * `429` (with `Retry-After`, see `retry_after_s`/`retry_after_form`), `429_no_retry_after`,
      `500`, `502` (an HTML body, as proxies send), `503`: transient, should be retried;
    * `reset`: the connection is aborted (TCP RST) without any response;
    * `hang`: no answer for `hang_s` (ends early when the client gives up), then a normal answer;
    * `malformed`: status 200 with a truncated JSON body; `empty`: 200 with `choices: []`;
    * `slow_stream`: a stream whose chunks come `stream_chunk_delay_s` apart (a non-stream
      request gets the same total delay before its answer);
    * `401` (the message echoes the request's key back, as real providers do), `400`, and
      `context` (400 with code `context_length_exceeded`): final, must not be retried.

    `script` is deterministic: the first `len(script)` requests of the model (of each distinct
    prompt when `per_prompt`) fail with those kinds in order, later ones succeed (or draw from
    `rates`). `fail_first=N, fail_kind=K` in `parse` is shorthand for `script=[K] * N`.
    `match` limits all of it to requests whose last user text contains that string (others are
    answered normally and do not advance the script), so one caller can fail while another
    succeeds. `rates` maps kinds to probabilities (summing to <= 1), drawn per request from a
    RNG seeded by (`seed`, model): reproducible for a sequential client, "deterministic-ish"
    under concurrency.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    script: tuple[str, ...] = ()
    per_prompt: bool = False
    match: str | None = None
    retry_after_s: float = 1.0
    retry_after_form: Literal["seconds", "http-date", "ms"] = "seconds"
    hang_s: float = 30.0
    stream_chunk_delay_s: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.rates, *self.script) if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        if any(not 0.0 <= r <= 1.0 for r in self.rates.values()):
            raise ValueError("fault rates must be within 0..1")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {sum(self.rates.values()):g} > 1")
        if self.retry_after_form not in RETRY_AFTER_FORMS:
            raise ValueError(f"retry_after_form must be one of {RETRY_AFTER_FORMS}")
        if min(self.retry_after_s, self.hang_s, self.stream_chunk_delay_s) < 0:
            raise ValueError("retry_after_s, hang_s and stream_chunk_delay_s must be >= 0")
        # A plain dict in a frozen dataclass: copy it so the caller's later edits do not leak in.
        object.__setattr__(self, "rates", {k: float(v) for k, v in self.rates.items() if v})
        object.__setattr__(self, "script", tuple(self.script))

    @classmethod
    def parse(cls, spec: Faults | Mapping[str, Any]) -> Faults:
        """A `Faults` from its JSON form; fault kinds may also be given as top-level rate keys.

        E.g. `{"429": 0.05, "reset": 0.01, "retry_after_s": 1}` or
        `{"fail_first": 2, "fail_kind": "500", "per_prompt": true}`.
        """
        if isinstance(spec, Faults):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"a fault spec is a JSON object, got {type(spec).__name__}")
        bad = [k for k in spec if k not in _FAULT_OPTIONS and k not in FAULT_KINDS]
        if bad:
            raise ValueError(
                f"unknown fault option(s) {bad}; options: {', '.join(_FAULT_OPTIONS)}, "
                f"or a fault kind as a rate: {', '.join(FAULT_KINDS)}"
            )
        rates = dict(spec.get("rates") or {})
        rates.update({k: v for k, v in spec.items() if k in FAULT_KINDS})
        script = list(spec.get("script") or [])
        fail_first = spec.get("fail_first", 0)
        if not isinstance(fail_first, int) or fail_first < 0:
            raise ValueError("fail_first must be an integer >= 0")
        if fail_first:
            if "fail_kind" not in spec:
                raise ValueError('fail_first needs a fail_kind (e.g. "500")')
            script += [str(spec["fail_kind"])] * fail_first
        options = {
            k: spec[k]
            for k in (
                "per_prompt",
                "match",
                "retry_after_s",
                "retry_after_form",
                "hang_s",
                "stream_chunk_delay_s",
                "seed",
            )
            if k in spec
        }
        try:
            return cls(
                rates={str(k): float(v) for k, v in rates.items()}, script=tuple(script), **options
            )
        except TypeError as exc:
            raise ValueError(f"bad fault spec: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """The JSON form `parse` reads back (as served by `GET /faults`)."""
        return {
            "rates": dict(self.rates),
            "script": list(self.script),
            "per_prompt": self.per_prompt,
            "match": self.match,
            "retry_after_s": self.retry_after_s,
            "retry_after_form": self.retry_after_form,
            "hang_s": self.hang_s,
            "stream_chunk_delay_s": self.stream_chunk_delay_s,
            "seed": self.seed,
        }


FaultsArg = Mapping[str, "Faults | Mapping[str, Any] | None"]


def parse_faults(spec: str | FaultsArg | None) -> dict[str, Faults | None]:
    """Per-model faults from a mapping or its JSON text (`@path` reads a file); `*` = any model.

    A `None` value clears that model's faults (meaningful for `POST /faults`).
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        text = Path(spec[1:]).read_text(encoding="utf-8") if spec.startswith("@") else spec
        try:
            spec = loads(text)
        except ValueError as exc:
            raise ValueError(f"--faults: not valid JSON: {exc}") from exc
    if not isinstance(spec, Mapping):
        raise ValueError("faults: expected a JSON object of model name -> fault spec")
    parsed: dict[str, Faults | None] = {}
    for model, value in spec.items():
        try:
            parsed[str(model)] = None if value is None else Faults.parse(value)
        except ValueError as exc:
            raise ValueError(f"faults for {model!r}: {exc}") from exc
    return parsed


def retry_after_headers(faults: Faults) -> dict[str, str]:
    """The Retry-After header in the configured form (seconds, an HTTP date, or OpenAI's ms)."""
    if faults.retry_after_form == "ms":
        return {"retry-after-ms": str(round(faults.retry_after_s * 1000))}
    if faults.retry_after_form == "http-date":
        from email.utils import formatdate

        return {
            "retry-after": formatdate(time.time() + math.ceil(faults.retry_after_s), usegmt=True)
        }
    return {"retry-after": f"{faults.retry_after_s:g}"}
