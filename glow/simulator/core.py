"""A bundled OpenAI-compatible model simulator, for the offline quickstart, the tests and benches.

Why: a benchmark runner must be exercised end to end (litellm's real HTTP transport, retries,
timeouts, concurrency, tool calls, judges, images) without a network or an API key. This module is
a small Starlette app, run by uvicorn on 127.0.0.1, that answers like a model would:

* Models are `Profile`s keyed by the request's `model` (litellm sends `openai/sim-strong` as
  `sim-strong`): an accuracy and a latency. Built in: `sim-strong`, `sim-fast`, `sim-judge`,
  `sim-echo`. An unknown model gets an OpenAI-style 404.
* It loads scenario files (`*.jsonl` of `glow.models.Scenario`) and indexes them by the text of
  their last user message. A request whose last user text matches is answered with the reference
  with probability `accuracy`, else with a plausibly wrong answer. The draw is a hash of
  (model, scenario id, request `seed`), so runs are reproducible.
* Tool scenarios (metadata `tool` + `expression`) first get a `tool_calls` reply, then an answer
  built from the tool result. Judge prompts (`[CRITERIA]`, `[QUESTION]`, `[REFERENCE]`, `[ANSWER]`
  marker lines) get `{"score": 0..10, "rationale": ...}` from token-overlap F1.
* `GET /stats` counts requests, the most concurrent in-flight requests and the faults injected
  (by kind) per model, so tests can assert concurrency limits and retries; `POST /stats/reset`.
* Faults (`Faults`, per model or `*`): 429 with/without Retry-After, 500/502/503, a connection
  reset, a hang, malformed JSON, empty choices, a slow stream, 401 echoing the key, 400 and a
  context-window error; as a deterministic script (`fail_first`) or seeded random rates. Set them
  with `--faults JSON`, `faults=` in Python, or at runtime with `POST /faults` (`GET` shows them,
  `DELETE` clears them), so one server can serve several test phases.

Run: `python -m glow.simulator --port 0` prints `GLOW_SIMULATOR_URL=http://127.0.0.1:<port>/v1`
once listening. From Python: `with SimulatorProcess() as sim: sim.url`, or `run_in_thread()`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import math
import os
import queue
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from glow.models import Scenario

try:  # orjson is ~5x faster for these small payloads; fall back to the standard library.
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is installed in the project venv
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _loads = json.loads


PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_SCENARIOS = PROJECT_ROOT / "data" / "scenarios"
URL_PREFIX = "GLOW_SIMULATOR_URL="
GENERIC_REPLY = "I am not sure."
NO_IMAGE_REPLY = "I cannot see an image."
JUDGE_MARKERS = ("[CRITERIA]", "[QUESTION]", "[REFERENCE]", "[ANSWER]")

# --------------------------------------------------------------------------- profiles


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


# --------------------------------------------------------------------------- faults

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
            spec = _loads(text)
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


def _retry_after_headers(faults: Faults) -> dict[str, str]:
    """The Retry-After header in the configured form (seconds, an HTTP date, or OpenAI's ms)."""
    if faults.retry_after_form == "ms":
        return {"retry-after-ms": str(round(faults.retry_after_s * 1000))}
    if faults.retry_after_form == "http-date":
        from email.utils import formatdate

        return {
            "retry-after": formatdate(time.time() + math.ceil(faults.retry_after_s), usegmt=True)
        }
    return {"retry-after": f"{faults.retry_after_s:g}"}


# --------------------------------------------------------------------------- scenarios


def normalise(text: str) -> str:
    """Collapse all whitespace runs to one space and strip: the scenario index key."""
    return " ".join(text.split())


def scenario_last_user_text(scenario: Scenario) -> str:
    """The text parts of the scenario's last user message (its whole input when a string)."""
    if isinstance(scenario.input, str):
        return scenario.input
    for message in reversed(scenario.input):
        if message.role == "user":
            if isinstance(message.content, str):
                return message.content
            return " ".join(p.text or "" for p in message.content if p.type == "text")
    return ""


def load_scenarios(paths: str | Path | Sequence[str | Path] | None = None) -> list[Scenario]:
    """Read scenarios from `.jsonl` files and directories of them (default: data/scenarios).

    A line that is not a valid Scenario raises ValueError naming the file and line.
    """
    if paths is None:
        paths = [DEFAULT_SCENARIOS]
    elif isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"scenarios: {path} is neither a .jsonl file nor a directory")
    scenarios: list[Scenario] = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                scenarios.append(Scenario.model_validate(_loads(line)))
            except Exception as exc:
                raise ValueError(f"{file}:{number}: not a valid scenario: {exc}") from exc
    return scenarios


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"\w+")
_VAGUE_SENTENCES = (
    "It depends on many factors, and there is no simple explanation.",
    "This mostly happens by chance, so nobody can say for sure.",
    "It is because of the weather, which changes from day to day.",
    "Scientists have not found any explanation for it yet.",
)


@dataclass
class Entry:
    """A scenario as the simulator needs it: reference, answer style and image requirement."""

    scenario: Scenario
    reference: str | None
    style: Literal["choice", "number", "short", "sentence", "none"]
    needs_image: bool

    @classmethod
    def of(cls, scenario: Scenario) -> Entry:
        refs = scenario.references
        reference = refs[0].strip() if refs else None
        if reference is None:
            style = "none"
        elif scenario.choices:
            style = "choice"
        elif _NUMBER.fullmatch(reference):
            style = "number"
        elif len(reference.split()) <= 3:
            style = "short"
        else:
            style = "sentence"
        needs_image = any(m.value == "image" for m in scenario.modalities)
        return cls(scenario, reference, style, needs_image)


# --------------------------------------------------------------------------- answering


def _unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from the parts (sha256, not Python's salted hash)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _off_by_some(number: str, u: float) -> str:
    """A plausibly wrong number near `number` (never equal to it)."""
    offsets = (1, -1, 2, -2, 10, -10, 3, 100)
    offset = offsets[int(u * len(offsets))]
    if "." in number:
        return f"{float(number) + offset / 10:g}"
    return str(int(number) + offset)


def token_f1(answer: str, reference: str) -> float:
    """Token-overlap F1 of lower-cased words (multiset), as in SQuAD."""
    a = Counter(_WORD.findall(answer.lower()))
    r = Counter(_WORD.findall(reference.lower()))
    common = sum((a & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def parse_judge_prompt(text: str) -> dict[str, str] | None:
    """Sections of a judge prompt, or None if the four marker lines are not there in order.

    Each section runs to the next marker-like line (`[ANYTHING]` alone on a line), so a prompt may
    put instructions after the answer behind e.g. an `[INSTRUCTIONS]` or `[END]` line.
    """
    lines = text.splitlines()
    positions: list[int] = []
    start = 0
    for marker in JUDGE_MARKERS:
        found = next((i for i in range(start, len(lines)) if lines[i].strip() == marker), None)
        if found is None:
            return None
        positions.append(found)
        start = found + 1
    sections: dict[str, str] = {}
    for marker, pos in zip(JUDGE_MARKERS, positions, strict=True):
        body: list[str] = []
        for line in lines[pos + 1 :]:
            stripped = line.strip()
            if stripped.startswith("[") and stripped.endswith("]") and stripped[1:-1].isupper():
                break
            body.append(line)
        sections[marker[1:-1].lower()] = "\n".join(body).strip()
    return sections


def judge_reply(sections: Mapping[str, str]) -> str:
    """`{"score": 0..10, "rationale": ...}` from the answer/reference token F1."""
    reference, answer = sections["reference"], sections["answer"]
    if reference.strip().lower() == "(none)":
        score, rationale = 5, "No reference was given, so the answer gets a neutral score."
    else:
        f1 = token_f1(answer, reference)
        score = round(10 * f1)
        rationale = f"Token overlap F1 between answer and reference is {f1:.2f}."
    return _dumps({"score": score, "rationale": rationale}).decode()


def _content_text(content: Any) -> str:
    """The text of an OpenAI message content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _has_image(messages: Sequence[Mapping[str, Any]]) -> bool:
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            return True
    return False


def _word_count(messages: Sequence[Mapping[str, Any]]) -> int:
    words = 0
    for message in messages:
        words += len(_content_text(message.get("content")).split())
        for call in message.get("tool_calls") or ():
            words += len(str(call.get("function", {}).get("arguments", "")).split())
    return words


@dataclass
class Reply:
    """What the simulated model says: text, or one tool call."""

    content: str | None = None
    tool_call: dict[str, Any] | None = None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_call else "stop"

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_call:
            message["tool_calls"] = [self.tool_call]
        return message

    def word_count(self) -> int:
        if self.tool_call:
            return len(self.tool_call["function"]["arguments"].split()) + 1
        return len((self.content or "").split())


@dataclass
class ModelStats:
    """Per-model counters served by `GET /stats`: requests, concurrency, faults by kind."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: Counter[str] = field(default_factory=Counter)


class Simulator:
    """The simulator's state and decisions, independent of HTTP: profiles, scenario index, stats."""

    def __init__(
        self,
        scenarios: Iterable[Scenario] = (),
        profiles: Mapping[str, Profile] | None = None,
        seed: int | None = None,
        faults: FaultsArg | None = None,
    ) -> None:
        self.profiles = dict(BUILTIN_PROFILES if profiles is None else profiles)
        self.faults: dict[str, Faults] = {}
        self._fault_seen: Counter[tuple[str, str]] = Counter()
        self._fault_rngs: dict[str, random.Random] = {}
        self.set_faults(faults or {})
        self.by_text: dict[str, Entry] = {}
        for scenario in scenarios:
            # First scenario wins when two share a prompt: their answers cannot be told apart.
            self.by_text.setdefault(
                normalise(scenario_last_user_text(scenario)), Entry.of(scenario)
            )
        self._by_length = sorted(self.by_text.items(), key=lambda kv: -len(kv[0]))
        self._short_pool = sorted(
            {e.reference for e in self.by_text.values() if e.style == "short"}
        )
        self.stats: dict[str, ModelStats] = collections.defaultdict(ModelStats)
        self.unknown_model_requests = 0
        self.rng = random.Random(seed)

    # ----------------------------------------------------------------- lookup

    def profile_for(self, model: str) -> tuple[str, Profile] | None:
        """The profile for a request's model; `openai/x` is accepted as `x`."""
        if model in self.profiles:
            return model, self.profiles[model]
        short = model.rsplit("/", 1)[-1]
        if short in self.profiles:
            return short, self.profiles[short]
        return None

    def match(self, text: str) -> Entry | None:
        """Scenario whose last user text equals `text` (normalised), else the longest contained."""
        key = normalise(text)
        entry = self.by_text.get(key)
        if entry is None and key:
            entry = next((e for t, e in self._by_length if t and t in key), None)
        return entry

    # ----------------------------------------------------------------- answering

    def reply(self, model: str, profile: Profile, body: Mapping[str, Any]) -> Reply:
        """Decide the reply to one chat completion request (see the module docstring)."""
        messages: list[dict[str, Any]] = [
            m for m in body.get("messages") or [] if isinstance(m, dict)
        ]
        users = [m for m in messages if m.get("role") == "user"]
        last_user = _content_text(users[-1].get("content")) if users else ""
        if profile.kind == "echo":
            return Reply(content=last_user)
        sections = parse_judge_prompt(last_user)
        if sections is not None:
            return Reply(content=judge_reply(sections))
        entry = self.match(last_user)
        last = messages[-1] if messages else {}
        if entry is None:
            if last.get("role") == "tool":  # an unknown task, but a tool answered: relay it
                return Reply(content=_content_text(last.get("content")).strip() or GENERIC_REPLY)
            return Reply(content=GENERIC_REPLY)
        if entry.needs_image and not _has_image(messages):
            return Reply(content=NO_IMAGE_REPLY)
        seed = body.get("seed")
        correct = _unit(model, entry.scenario.id, seed, "correct") < profile.accuracy
        u_wrong = _unit(model, entry.scenario.id, seed, "wrong")

        tool = entry.scenario.metadata.get("tool")
        if tool and last.get("role") == "tool":
            result = _content_text(last.get("content")).strip()
            if correct or not result:
                return Reply(content=result or GENERIC_REPLY)
            if _NUMBER.fullmatch(result):
                return Reply(content=_off_by_some(result, u_wrong))
            return Reply(content=_VAGUE_SENTENCES[int(u_wrong * len(_VAGUE_SENTENCES))])
        offered = {
            (t.get("function") or {}).get("name")
            for t in body.get("tools") or []
            if isinstance(t, dict)
        }
        called = any(m.get("role") == "tool" for m in messages)
        if tool and tool in offered and not called:
            arguments = _dumps({"expression": str(entry.scenario.metadata.get("expression", ""))})
            call_id = (
                "call_"
                + hashlib.sha256(f"{model}\x1f{entry.scenario.id}\x1f{seed}".encode()).hexdigest()[
                    :24
                ]
            )
            return Reply(
                tool_call={
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool, "arguments": arguments.decode()},
                }
            )
        return Reply(content=self.answer(entry, correct, u_wrong))

    def answer(self, entry: Entry, correct: bool, u: float) -> str:
        """The reference (correct) or a plausibly wrong answer in the scenario's style."""
        ref = entry.reference
        if ref is None:
            return GENERIC_REPLY
        if entry.style == "choice":
            letters = [chr(ord("A") + i) for i in range(len(entry.scenario.choices or []))]
            right = ref.upper()[:1]
            if correct:
                return f"Answer: {right}"
            others = [letter for letter in letters if letter != right] or ["A"]
            return f"Answer: {others[int(u * len(others))]}"
        if correct:
            return ref
        if entry.style == "number":
            return _off_by_some(ref, u)
        if entry.style == "short":
            pool = [r for r in self._short_pool if r.lower() != ref.lower()]
            return pool[int(u * len(pool))] if pool else "I don't know."
        return _VAGUE_SENTENCES[int(u * len(_VAGUE_SENTENCES))]

    # ----------------------------------------------------------------- faults

    def set_faults(self, faults: FaultsArg, replace_all: bool = False) -> None:
        """Set (or with a None value clear) models' faults; `*` applies to models without own.

        Setting a model's faults restarts its script and its RNG, so each test phase starts
        from a known state. Unknown model names raise ValueError (a typo would inject nothing).
        """
        parsed = parse_faults(faults)
        unknown = [m for m in parsed if m != "*" and m not in self.profiles]
        if unknown:
            raise ValueError(
                f"faults for unknown model(s) {unknown}; models: {list(self.profiles)}"
            )
        if replace_all:
            self.faults.clear()
            self._fault_seen.clear()
            self._fault_rngs.clear()
        for model, value in parsed.items():
            for key in [k for k in self._fault_seen if k[0] == model]:
                del self._fault_seen[key]
            self._fault_rngs.pop(model, None)
            if value is None:
                self.faults.pop(model, None)
            else:
                self.faults[model] = value
        if "*" in parsed:  # the default changed: every model without its own faults restarts
            for key in [k for k in self._fault_seen if k[0] not in self.faults]:
                del self._fault_seen[key]
            self._fault_rngs.clear()

    def faults_json(self) -> dict[str, Any]:
        return {model: f.to_json() for model, f in sorted(self.faults.items())}

    def draw_fault(self, model: str, body: Mapping[str, Any]) -> tuple[str, Faults] | None:
        """The fault to inject into this request of `model` (a profile name), if any."""
        faults = self.faults.get(model) or self.faults.get("*")
        if faults is None:
            return None
        if faults.match is not None:
            users = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            users = [m for m in users if m.get("role") == "user"]
            if not users or faults.match not in _content_text(users[-1].get("content")):
                return None
        if faults.script:
            prompt = ""
            if faults.per_prompt:
                prompt = hashlib.sha256(_dumps(body.get("messages") or [])).hexdigest()
            seen = self._fault_seen[(model, prompt)]
            self._fault_seen[(model, prompt)] = seen + 1
            if seen < len(faults.script):
                return faults.script[seen], faults
        if not faults.rates:
            return None
        rng = self._fault_rngs.get(model)
        if rng is None:
            rng = self._fault_rngs[model] = random.Random(f"{faults.seed}\x1f{model}")
        u, total = rng.random(), 0.0
        for kind in FAULT_KINDS:  # a fixed order, so a seed always means the same draws
            total += faults.rates.get(kind, 0.0)
            if u < total:
                return kind, faults
        return None

    # ----------------------------------------------------------------- stats

    def stats_json(self) -> dict[str, Any]:
        models = {
            name: {
                "requests": s.requests,
                "in_flight": s.in_flight,
                "max_in_flight": s.max_in_flight,
                "faults": dict(sorted(s.faults.items())),
            }
            for name, s in sorted(self.stats.items())
        }
        return {
            "models": models,
            "requests": sum(s.requests for s in self.stats.values()),
            "faults": sum(sum(s.faults.values()) for s in self.stats.values()),
            "unknown_model_requests": self.unknown_model_requests,
        }

    def reset_stats(self) -> None:
        """Zero the counters; max_in_flight restarts from what is in flight now."""
        for s in self.stats.values():
            s.requests, s.max_in_flight = 0, s.in_flight
            s.faults.clear()
        self.unknown_model_requests = 0


# --------------------------------------------------------------------------- HTTP


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _error(
    status: int,
    message: str,
    code: str | None,
    kind: str = "invalid_request_error",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An OpenAI-style error body."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return _json({"error": error}, status, headers)


_TRANSPORT = "glow.simulator.transport"  # scope key: the connection's asyncio transport
_BAD_GATEWAY_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


class _SimulatorApp(Starlette):
    """Starlette, plus the connection's transport in the scope so a fault can reset it.

    uvicorn passes its per-request `send` (a bound method of the request cycle, which holds the
    transport) straight to the app; Starlette's own middleware wraps it, so it is caught here.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if isinstance(transport, asyncio.Transport):
                scope = {**scope, _TRANSPORT: transport}
        await super().__call__(scope, receive, send)


class _NoResponse(Response):
    """What an endpoint returns once the connection is gone: nothing is sent."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


async def _broken_body() -> AsyncIterator[bytes]:
    """A body that fails after the headers: the server then closes the connection mid-response."""
    yield b'{"id": "chatcmpl-reset", "choices": ['
    raise ConnectionResetError("glow simulator: injected connection reset")


async def _reset(request: Request) -> Response:
    """Abort the connection with a TCP RST and no response (falls back to a cut-off body)."""
    transport = request.scope.get(_TRANSPORT)
    if not isinstance(transport, asyncio.Transport):
        return StreamingResponse(_broken_body(), media_type="application/json")
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST instead of FIN, like a crashed peer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)  # uvicorn marks the request disconnected, so it logs nothing
    return _NoResponse()


async def _hang(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client disconnects (returns True): a hung provider."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(0.05, left))
        if await request.is_disconnected():
            return True
    return False


def _fault_response(kind: str, faults: Faults, request: Request) -> Response | None:
    """The error response for a status-code fault kind, else None (the kind shapes a reply)."""
    if kind == "429":
        return _error(
            429,
            "Rate limit reached for requests. Please try again later.",
            "rate_limit_exceeded",
            "requests",
            headers=_retry_after_headers(faults),
        )
    if kind == "429_no_retry_after":
        return _error(429, "Rate limit reached for requests.", "rate_limit_exceeded", "requests")
    if kind == "500":
        return _error(
            500, "The server had an error while processing your request.", None, "server_error"
        )
    if kind == "502":
        return Response(_BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
    if kind == "503":
        return _error(
            503,
            "The engine is currently overloaded, please try again later.",
            None,
            "server_error",
        )
    if kind == "401":
        # Real providers echo the key they were given (OpenAI masks its middle; the worst case
        # is the whole key), so a client must mask its key in every error it records.
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip() or request.headers.get("api-key", "")
        return _error(
            401,
            f"Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_api_key",
        )
    if kind == "400":
        return _error(
            400,
            "Invalid value for 'temperature': simulated bad request.",
            "invalid_value",
            param="temperature",
        )
    if kind == "context":
        return _error(
            400,
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9001 tokens. Please reduce the length of the messages.",
            "context_length_exceeded",
            param="messages",
        )
    return None


def create_app(simulator: Simulator) -> Starlette:
    """The ASGI app serving `simulator`: chat completions, models, health, stats and faults."""

    async def chat_completions(request: Request) -> Response:
        try:
            body = _loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            return _error(400, f"invalid JSON body: {exc}", None)
        model = str(body.get("model") or "")
        found = simulator.profile_for(model)
        if found is None:
            simulator.unknown_model_requests += 1
            return _error(404, f"The model `{model}` does not exist.", "model_not_found")
        name, profile = found
        stats = simulator.stats[name]
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                stats.in_flight -= 1

        response: Response | None = None
        try:
            response = await answer(request, body, model, name, profile, stats, release)
            return response
        finally:
            # A streamed answer stays in flight until its last chunk (its body releases);
            # everything else, faults on stream requests included, ends here.
            if not isinstance(response, StreamingResponse) or response.background is None:
                release()

    async def answer(
        request: Request,
        body: dict[str, Any],
        model: str,
        name: str,
        profile: Profile,
        stats: ModelStats,
        release: Callable[[], None],
    ) -> Response:
        """One chat completion, with the fault drawn for it (if any) injected."""
        drawn = simulator.draw_fault(name, body)
        kind, faults = drawn if drawn is not None else (None, Faults())
        if kind is not None:
            stats.faults[kind] += 1
        if kind == "hang":
            if await _hang(request, faults.hang_s):
                return _NoResponse()
        else:
            delay = profile.draw_latency(simulator.rng)
            if delay:
                await asyncio.sleep(delay)
        if kind == "reset":
            return await _reset(request)
        if kind is not None and (error := _fault_response(kind, faults, request)) is not None:
            return error
        reply = simulator.reply(name, profile, body)
        messages = body.get("messages") or []
        prompt_tokens = int(_word_count([m for m in messages if isinstance(m, dict)]) * 1.3)
        completion_tokens = int(reply.word_count() * 1.3)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": model,
        }
        chunk_delay = faults.stream_chunk_delay_s if kind == "slow_stream" else 0.0
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _sse(head, reply, usage if include_usage else None, chunk_delay, release),
                media_type="text/event-stream",
                background=BackgroundTask(release),
            )
        if chunk_delay:  # a slow stream asked for without streaming: the same total wait
            await asyncio.sleep(chunk_delay * _sse_chunks(reply))
        if kind == "malformed":
            return Response(
                b'{"id": "' + head["id"].encode() + b'", "object": "chat.completion", '
                b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "Ans',
                media_type="application/json",
            )
        choices = [{"index": 0, "message": reply.message(), "finish_reason": reply.finish_reason}]
        return _json(
            {
                **head,
                "object": "chat.completion",
                "choices": [] if kind == "empty" else choices,
                "usage": usage,
            }
        )

    async def models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "glow-simulator"}
            for name in simulator.profiles
        ]
        return _json({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return _json(
            {
                "status": "ok",
                "scenarios": len(simulator.by_text),
                "models": list(simulator.profiles),
            }
        )

    async def stats(request: Request) -> Response:
        return _json(simulator.stats_json())

    async def reset(request: Request) -> Response:
        simulator.reset_stats()
        return _json(simulator.stats_json())

    async def get_faults(request: Request) -> Response:
        return _json({"faults": simulator.faults_json()})

    async def post_faults(request: Request) -> Response:
        """Set models' faults: `{"model": spec | null, "*": spec}`; `?replace=1` clears the rest."""
        try:
            spec = _loads(await request.body())
            replace_all = request.query_params.get("replace", "").lower() in ("1", "true", "yes")
            simulator.set_faults(spec, replace_all=replace_all)
        except ValueError as exc:
            return _error(400, f"faults: {exc}", None)
        return _json({"faults": simulator.faults_json()})

    async def delete_faults(request: Request) -> Response:
        simulator.set_faults({}, replace_all=True)
        return _json({"faults": {}})

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/reset", reset, methods=["POST"]),
        Route("/faults", get_faults, methods=["GET"]),
        Route("/faults", post_faults, methods=["POST"]),
        Route("/faults", delete_faults, methods=["DELETE"]),
    ]
    app = _SimulatorApp(routes=routes)
    app.state.simulator = simulator
    return app


def _sse_chunks(reply: Reply) -> int:
    """How many chunks `_sse` sends for `reply` (role, content pieces or tool call, finish)."""
    if reply.tool_call:
        return 3
    return 2 + math.ceil(len((reply.content or "").split(" ")) / 4)


async def _sse(
    head: dict[str, Any],
    reply: Reply,
    usage: dict[str, int] | None,
    chunk_delay_s: float = 0.0,
    on_end: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The reply as OpenAI `chat.completion.chunk` server-sent events, ending with [DONE].

    `chunk_delay_s` waits before each chunk (a slow stream); `on_end()` runs when it stops.
    """
    try:
        async for chunk in _sse_events(head, reply, usage):
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
            yield chunk
    finally:
        if on_end is not None:
            on_end()


async def _sse_events(
    head: dict[str, Any], reply: Reply, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + _dumps(chunk) + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    if reply.tool_call:
        yield event({"tool_calls": [{"index": 0, **reply.tool_call}]})
    else:
        words = (reply.content or "").split(" ")
        for i in range(0, len(words), 4):
            piece = " ".join(words[i : i + 4])
            yield event({"content": piece if i == 0 else " " + piece})
    yield event({}, reply.finish_reason)
    if usage is not None:
        yield (
            b"data: "
            + _dumps({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            + b"\n\n"
        )
    yield b"data: [DONE]\n\n"


def build_app(
    scenarios: str | Path | Sequence[str | Path] | None = None,
    profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
    latency: float | None = None,
    faults: str | FaultsArg | None = None,
) -> Starlette:
    """Load scenarios, resolve profiles and faults; the ASGI app (state: `app.state.simulator`)."""
    simulator = Simulator(
        load_scenarios(scenarios), resolve_profiles(profiles, latency), faults=parse_faults(faults)
    )
    return create_app(simulator)


class _Control:
    """HTTP control of a running simulator: stats and runtime faults (for tests and benches)."""

    url: str

    @property
    def base_url(self) -> str:
        """The server root (without /v1), where /health, /stats and /faults live."""
        return self.url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        """`GET /stats`: per-model requests, in flight, max in flight and faults by kind."""
        import httpx

        return httpx.get(f"{self.base_url}/stats", timeout=10).raise_for_status().json()

    def reset_stats(self) -> None:
        import httpx

        httpx.post(f"{self.base_url}/stats/reset", timeout=10).raise_for_status()

    def set_faults(self, faults: FaultsArg, *, replace: bool = False) -> dict[str, Any]:
        """`POST /faults`: set (None clears) models' faults; `replace` clears all others first.

        Validated here too, so a bad spec raises ValueError in the caller rather than a 400.
        """
        import httpx

        body = {m: None if f is None else f.to_json() for m, f in parse_faults(faults).items()}
        response = httpx.post(
            f"{self.base_url}/faults",
            content=_dumps(body),
            params={"replace": "1"} if replace else None,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        if response.status_code == 400:
            raise ValueError(response.json()["error"]["message"])
        return response.raise_for_status().json()["faults"]


# --------------------------------------------------------------------------- serving


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket bound before uvicorn starts, so port 0 still tells us the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def _server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
    )
    return uvicorn.Server(config)


async def _serve(server: uvicorn.Server, sock: socket.socket, on_ready: Any) -> None:
    """Serve until told to exit, calling on_ready() once uvicorn is accepting connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        on_ready()
    await task


@dataclass
class ThreadedSimulator(_Control):
    """A simulator served from a daemon thread of this process (see `run_in_thread`)."""

    url: str
    app: Starlette
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def simulator(self) -> Simulator:
        return self.app.state.simulator

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread (in-flight requests get `timeout`)."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ThreadedSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    scenarios: str | Path | Sequence[str | Path] | None = None,
    *,
    profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
    latency: float | None = None,
    faults: str | FaultsArg | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
) -> ThreadedSimulator:
    """Start the simulator in-process (uvicorn in a daemon thread); returns once it listens.

    Handy for tests that want to inspect `.simulator` directly. Its event loop shares this
    process's GIL, so benchmarks should prefer `SimulatorProcess`. `faults`: see `Faults`.
    """
    app = build_app(scenarios, profiles, latency, faults)
    sock = _bind(host, port)
    server = _server(app)
    ready = threading.Event()

    def target() -> None:
        try:
            asyncio.run(_serve(server, sock, ready.set))
        finally:
            ready.set()  # also on a failed start, so the caller does not wait the full timeout

    thread = threading.Thread(target=target, name="glow-simulator", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout) or not server.started:
        server.should_exit = True
        sock.close()
        raise RuntimeError(f"simulator did not start within {startup_timeout}s")
    return ThreadedSimulator(url=_url(sock), app=app, server=server, thread=thread)


class SimulatorProcess(_Control):
    """The simulator as a subprocess (`python -m glow.simulator`): a context manager.

    `with SimulatorProcess() as sim:` starts it, waits for its `GLOW_SIMULATOR_URL=` line and
    exposes `sim.url` (the `/v1` base for litellm's `api_base`); leaving the block terminates it
    (SIGTERM, then a kill after `stop_timeout`). A separate process keeps the simulator's CPU off
    the caller's GIL, which matters when benchmarking the runner. `faults` (see `Faults`) are
    passed as `--faults JSON`; `set_faults()` changes them while it runs.
    """

    def __init__(
        self,
        scenarios: str | Path | Sequence[str | Path] | None = None,
        *,
        profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
        latency: float | None = None,
        faults: str | FaultsArg | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if scenarios is None:
            self.scenarios: list[str] = []
        elif isinstance(scenarios, str | Path):
            self.scenarios = [str(scenarios)]
        else:
            self.scenarios = [str(s) for s in scenarios]
        if isinstance(profiles, Mapping):
            self.profile_flags = [
                p.flag(n) if isinstance(p, Profile) else f"{n}={p}" for n, p in profiles.items()
            ]
        else:
            self.profile_flags = list(profiles or [])
        for flag in self.profile_flags:
            parse_profile(flag)  # fail here, not in the child
        self.faults = parse_faults(faults)  # likewise
        self.latency = latency
        self.host, self.port = host, port
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.env = dict(env or {})
        self.url: str = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "glow.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        for path in self.scenarios:
            cmd += ["--scenarios", path]
        for flag in self.profile_flags:
            cmd += ["--profile", flag]
        if self.latency is not None:
            cmd += ["--latency", str(self.latency)]
        faults = {m: f.to_json() for m, f in self.faults.items() if f is not None}
        if faults:
            cmd += ["--faults", _dumps(faults).decode()]
        return cmd

    def start(self) -> str:
        """Start the subprocess and return its URL once it is listening."""
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        from glow.lifeline import lifeline_popen_kwargs

        # Under `glow.lifeline`: the simulator dies with this process, even on kill -9.
        python, _, module, *args = self.command()
        self.process = subprocess.Popen(
            [python, "-m", "glow.lifeline", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            **lifeline_popen_kwargs(),
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process.stdout, lines), daemon=True).start()
        stderr_pump = threading.Thread(
            target=self._pump, args=(self.process.stderr, None), daemon=True
        )
        stderr_pump.start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                tail = self.stderr_tail()
                raise RuntimeError(
                    f"simulator printed no URL within {self.startup_timeout}s:\n{tail}"
                ) from None
            if line is None:  # stdout closed: the process died
                code = self.process.wait()
                stderr_pump.join(2.0)
                raise RuntimeError(f"simulator exited with {code}:\n{self.stderr_tail()}")
            if line.startswith(URL_PREFIX):
                self.url = line[len(URL_PREFIX) :].strip()
                return self.url

    def _pump(self, stream: Any, lines: queue.Queue[str | None] | None) -> None:
        """Drain a pipe so the child never blocks on it; stdout lines go to `lines`."""
        for line in stream:
            if lines is not None:
                lines.put(line)
            else:
                self._stderr.append(line)
        if lines is not None:
            lines.put(None)

    def stderr_tail(self) -> str:
        return "".join(self._stderr)

    def stop(self) -> int | None:
        """Terminate (SIGTERM), wait `stop_timeout`, kill if needed; returns the exit code.

        The simulator's whole process group goes, and it goes by itself should this process
        die first (`glow.lifeline`).
        """
        from glow.lifeline import stop_group

        process, self.process = self.process, None
        if process is None:
            return None
        return stop_group(process, self.stop_timeout)

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glow.simulator",
        description="OpenAI-compatible model simulator for offline Glow runs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--scenarios",
        action="append",
        metavar="PATH",
        help=f"a .jsonl file or a directory of them; repeatable (default: {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME=ACCURACY:LATENCY[:JITTER[:KIND]]",
        help="add or override a model profile; KIND is answer (default) or echo; repeatable",
    )
    parser.add_argument(
        "--latency", type=float, help="fixed latency in seconds for every profile (no jitter)"
    )
    parser.add_argument(
        "--faults",
        action="append",
        default=[],
        metavar="JSON|@FILE",
        help=(
            "faults per model, a JSON object {model|*: spec}, e.g. "
            '\'{"sim-fast": {"429": 0.05, "reset": 0.01}, "sim-strong": {"fail_first": 2, '
            '"fail_kind": "500", "per_prompt": true}}\'; kinds: '
            + ", ".join(FAULT_KINDS)
            + "; repeatable (later wins per model); change at runtime with POST /faults"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the URL line on stdout once listening."""
    args = _parser().parse_args(argv)
    try:
        faults: dict[str, Faults | None] = {}
        for spec in args.faults:
            faults.update(parse_faults(spec))
        app = build_app(args.scenarios, args.profile, args.latency, faults)
    except (ValueError, OSError) as exc:
        print(f"glow.simulator: {exc}", file=sys.stderr)
        return 2
    sock = _bind(args.host, args.port)
    url = _url(sock)
    # uvicorn re-raises the signal it caught after shutting down; make that a quiet exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    asyncio.run(_serve(_server(app), sock, lambda: print(URL_PREFIX + url, flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
