"""The simulator's state and decisions, independent of HTTP: the reply to a request, its fault.

`Simulator` holds the profiles, the scenario index, the faults in force and the per-model
counters; `app.py` serves it over HTTP.
"""

from __future__ import annotations

import collections
import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from glow.models import Scenario
from glow.simulator._json import dumps
from glow.simulator.faults import FAULT_KINDS, Faults, FaultsArg, parse_faults
from glow.simulator.profiles import BUILTIN_PROFILES, Profile
from glow.simulator.replies import (
    GENERIC_REPLY,
    NO_IMAGE_REPLY,
    VAGUE_SENTENCES,
    Reply,
    content_text,
    has_image,
    judge_reply,
    off_by_some,
    parse_judge_prompt,
    unit,
)
from glow.simulator.scenarios import NUMBER, Entry, normalize, scenario_last_user_text


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
                normalize(scenario_last_user_text(scenario)), Entry.of(scenario)
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
        """Scenario whose last user text equals `text` (normalized), else the longest contained."""
        key = normalize(text)
        entry = self.by_text.get(key)
        if entry is None and key:
            entry = next((e for t, e in self._by_length if t and t in key), None)
        return entry

    # ----------------------------------------------------------------- answering

    def reply(self, model: str, profile: Profile, body: Mapping[str, Any]) -> Reply:
        """Decide the reply to one chat completion request (see `glow.simulator`)."""
        messages: list[dict[str, Any]] = [
            m for m in body.get("messages") or [] if isinstance(m, dict)
        ]
        users = [m for m in messages if m.get("role") == "user"]
        last_user = content_text(users[-1].get("content")) if users else ""
        if profile.kind == "echo":
            return Reply(content=last_user)
        sections = parse_judge_prompt(last_user)
        if sections is not None:
            return Reply(content=judge_reply(sections))
        entry = self.match(last_user)
        last = messages[-1] if messages else {}
        if entry is None:
            if last.get("role") == "tool":  # an unknown task, but a tool answered: relay it
                return Reply(content=content_text(last.get("content")).strip() or GENERIC_REPLY)
            return Reply(content=GENERIC_REPLY)
        if entry.needs_image and not has_image(messages):
            return Reply(content=NO_IMAGE_REPLY)
        seed = body.get("seed")
        correct = unit(model, entry.scenario.id, seed, "correct") < profile.accuracy
        u_wrong = unit(model, entry.scenario.id, seed, "wrong")

        tool = entry.scenario.metadata.get("tool")
        if tool and last.get("role") == "tool":
            result = content_text(last.get("content")).strip()
            if correct or not result:
                return Reply(content=result or GENERIC_REPLY)
            if NUMBER.fullmatch(result):
                return Reply(content=off_by_some(result, u_wrong))
            return Reply(content=VAGUE_SENTENCES[int(u_wrong * len(VAGUE_SENTENCES))])
        offered = {
            (t.get("function") or {}).get("name")
            for t in body.get("tools") or []
            if isinstance(t, dict)
        }
        called = any(m.get("role") == "tool" for m in messages)
        if tool and tool in offered and not called:
            arguments = dumps({"expression": str(entry.scenario.metadata.get("expression", ""))})
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
            return off_by_some(ref, u)
        if entry.style == "short":
            pool = [r for r in self._short_pool if r.lower() != ref.lower()]
            return pool[int(u * len(pool))] if pool else "I don't know."
        return VAGUE_SENTENCES[int(u * len(VAGUE_SENTENCES))]

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
        """The faults in force per model, in `Faults.parse`'s form (served by `GET /faults`)."""
        return {model: f.to_json() for model, f in sorted(self.faults.items())}

    def draw_fault(self, model: str, body: Mapping[str, Any]) -> tuple[str, Faults] | None:
        """The fault to inject into this request of `model` (a profile name), if any."""
        faults = self.faults.get(model) or self.faults.get("*")
        if faults is None:
            return None
        if faults.match is not None:
            users = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            users = [m for m in users if m.get("role") == "user"]
            if not users or faults.match not in content_text(users[-1].get("content")):
                return None
        if faults.script:
            prompt = ""
            if faults.per_prompt:
                prompt = hashlib.sha256(dumps(body.get("messages") or [])).hexdigest()
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
        """The counters per model and in total (served by `GET /stats`), for tests and benches."""
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
