"""The scenarios the simulator knows: loading them, and what it needs of each one (`Entry`).

The simulator indexes scenarios by the text of their last user message (whitespace
normalized), so a request is matched to its scenario by what it asks, whatever the runner
wrapped around it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from glow.models import Scenario
from glow.simulator._json import loads

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_SCENARIOS = PROJECT_ROOT / "data" / "scenarios"


def normalize(text: str) -> str:
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
                scenarios.append(Scenario.model_validate(loads(line)))
            except Exception as exc:
                raise ValueError(f"{file}:{number}: not a valid scenario: {exc}") from exc
    return scenarios


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Entry:
    """A scenario as the simulator needs it: reference, answer style and image requirement."""

    scenario: Scenario
    reference: str | None
    style: Literal["choice", "number", "short", "sentence", "none"]
    needs_image: bool

    @classmethod
    def of(cls, scenario: Scenario) -> Entry:
        """The entry for `scenario`: its first reference decides the style of wrong answers."""
        refs = scenario.references
        reference = refs[0].strip() if refs else None
        if reference is None:
            style = "none"
        elif scenario.choices:
            style = "choice"
        elif NUMBER.fullmatch(reference):
            style = "number"
        elif len(reference.split()) <= 3:
            style = "short"
        else:
            style = "sentence"
        needs_image = any(m.value == "image" for m in scenario.modalities)
        return cls(scenario, reference, style, needs_image)
