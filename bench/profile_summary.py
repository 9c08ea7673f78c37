"""Summarise a py-spy `--format raw` profile (collapsed stacks) of Glow's flow process.

`python -m bench.profile_summary PROFILE.raw [--top 40]` prints, over the CPU samples (py-spy
skips idle threads), the share of stacks that pass through each area (inclusive, so the areas
overlap) and the heaviest frames of Glow's own code and of the libraries it drives.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# Areas, in the order a sample is charged to one of them ("exclusive" column): the first area
# whose pattern any frame of the stack matches, most specific first.
AREAS: list[tuple[str, str]] = [
    ("artifact API calls (create_markdown_artifact)", r"prefect/artifacts\.py"),
    ("trace markdown rendering", r"glow/trace\.py"),
    ("grading", r"tasks/grade\.py|rubrics/"),
    ("store (SQLAlchemy + sqlite)", r"glow/store/|sqlalchemy/"),
    ("litellm call (incl. its httpx)", r"litellm/"),
    (
        "Prefect task engine / states / events",
        r"prefect/(task_engine|task_runners|states|"
        r"events|client|futures|_internal|context|utilities|logging|results|tasks\.py)",
    ),
    ("import / startup", r"<frozen importlib|_find_and_load"),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['func']} ({file})"


def summarise(path: Path, top: int) -> str:
    stacks = load(path)
    total = sum(n for _, n in stacks) or 1
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for stack, n in stacks:
        text = ";".join(stack)
        if stack and stack[0].startswith("thread ") or "(0x" in stack[0]:
            threads["main" if "MainThread" in stack[0] else "worker/other"] += n
        charged = False
        for name, pattern in AREAS:
            if re.search(pattern, text):
                inclusive[name] += n
                if not charged:
                    exclusive[name] += n
                    charged = True
        if not charged:
            exclusive["other"] += n
        for frame in set(stack):
            if any(k in frame for k in ("/glow/", "/flows/", "/tasks/", "prefect/", "litellm/")):
                frames[short(frame)] += n
    lines = [
        f"{total} samples ({path.name})",
        "",
        "| area | inclusive | charged to |",
        "|---|---|---|",
    ]
    for name, _ in [*AREAS, ("other", "")]:
        lines.append(
            f"| {name} | {100 * inclusive[name] / total:.1f}% "
            f"| {100 * exclusive[name] / total:.1f}% |"
        )
    lines += ["", f"top {top} frames (inclusive):", ""]
    for frame, n in frames.most_common(top):
        lines.append(f"- {100 * n / total:5.1f}%  {frame}")
    if threads:
        lines += [
            "",
            "threads: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in threads.items()),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
