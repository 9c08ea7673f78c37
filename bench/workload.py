"""The bench's workload: N exact-answer scenarios (or calculator-tool scenarios) and a Glow test.

Every scenario's last user text is unique, so the simulator finds it by a dict lookup, and the
simulated model (`bench-exact`, accuracy 1.0) always answers the reference: all three runners must
then score every sample correct, which is what the bench checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

MODEL = "bench-exact"
SIM_KEY_ENV = "BENCH_SIM_KEY"
SIM_KEY = "sim-local-key"  # the simulator ignores keys; a fake one keeps clients happy
TOOL_REF = "glow.tools:calculator"
EXACT_RUBRIC = {
    "name": "bench_exact",
    "version": "1",
    "description": "Exact answer, ignoring case, spacing and punctuation (as exact_answer).",
    "pass_threshold": 1.0,
    "standards": [
        {
            "name": "exact",
            "kind": "exact",
            "weight": 1,
            "threshold": 1.0,
            "params": {
                "case_sensitive": False,
                "strip": True,
                "normalize_whitespace": True,
                "ignore_punctuation": True,
            },
        }
    ],
}


@dataclass(frozen=True)
class Workload:
    """Files of one bench workload."""

    cells: int
    agent: bool
    scenarios: Path
    rubric: Path
    test: Path


def scenario(i: int, *, agent: bool) -> dict[str, object]:
    """Scenario number i: an addition (direct) or a multiplication done with the calculator."""
    a, b = 1000 + 7 * i, 3 + (i * 13) % 997
    if agent:
        expression = f"{a} * {b}"
        return {
            "id": f"bench-{i:06d}",
            "input": f"Item {i}: use the calculator to compute {expression}. "
            "Reply with the number only.",
            "reference": str(a * b),
            "metadata": {"category": "tool_use", "tool": "calculator", "expression": expression},
        }
    return {
        "id": f"bench-{i:06d}",
        "input": f"Item {i}: what is {a} plus {b}? Reply with the number only.",
        "reference": str(a + b),
        "metadata": {"category": "exact"},
    }


def write_scenarios(directory: Path, *, cells: int, agent: bool) -> Path:
    """The scenarios jsonl (the simulator loads it before the test file can name its URL)."""
    directory.mkdir(parents=True, exist_ok=True)
    scenarios = directory / "scenarios.jsonl"
    with scenarios.open("w", encoding="utf-8") as out:
        for i in range(cells):
            out.write(json.dumps(scenario(i, agent=agent)) + "\n")
    return scenarios


def write_test(
    directory: Path, scenarios: Path, *, cells: int, agent: bool, sim_url: str, concurrency: int
) -> Workload:
    """The rubric and the Glow test YAML (one model, one agent, epochs 1: a cell per scenario)."""
    rubric = directory / "bench_exact.yaml"
    rubric.write_text(yaml.safe_dump(EXACT_RUBRIC, sort_keys=False))
    agent_spec: dict[str, object] = {"name": "direct"}
    if agent:
        agent_spec = {"name": "calc", "tools": [TOOL_REF], "max_turns": 3}
    test = {
        "name": f"bench-{'agent' if agent else 'direct'}-{cells}",
        "scenarios": str(scenarios),
        "models": [
            {
                "name": MODEL,
                "model": f"openai/{MODEL}",
                "api_base": sim_url,
                "api_key_env": SIM_KEY_ENV,
            }
        ],
        "agents": [agent_spec],
        "rubric": str(rubric),
        "concurrency": concurrency,
        "timeout_s": 60,
        "max_retries": 2,
    }
    test_path = directory / "test.yaml"
    test_path.write_text(yaml.safe_dump(test, sort_keys=False))
    return Workload(cells, agent, scenarios, rubric, test_path)


def read_scenarios(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
