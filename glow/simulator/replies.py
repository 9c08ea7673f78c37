"""What a simulated model says: judge scores, plausibly wrong answers, and the reply itself.

Whether an answer is right, and which wrong answer it gets, is drawn from a hash of the
request's parts (`unit`), never from Python's salted `hash` or a shared RNG: the same
request gets the same reply in any process and in any order.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glow.simulator._json import dumps

GENERIC_REPLY = "I am not sure."
NO_IMAGE_REPLY = "I cannot see an image."
JUDGE_MARKERS = ("[CRITERIA]", "[QUESTION]", "[REFERENCE]", "[ANSWER]")

_WORD = re.compile(r"\w+")
VAGUE_SENTENCES = (
    "It depends on many factors, and there is no simple explanation.",
    "This mostly happens by chance, so nobody can say for sure.",
    "It is because of the weather, which changes from day to day.",
    "Scientists have not found any explanation for it yet.",
)


def unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from the parts (sha256, not Python's salted hash)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def off_by_some(number: str, u: float) -> str:
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
    return dumps({"score": score, "rationale": rationale}).decode()


def content_text(content: Any) -> str:
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


def has_image(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message has an `image_url` part (an image scenario needs one)."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            return True
    return False


def word_count(messages: Sequence[Mapping[str, Any]]) -> int:
    """Words in the messages' text and tool-call arguments: the basis of the usage counts."""
    words = 0
    for message in messages:
        words += len(content_text(message.get("content")).split())
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
        """OpenAI's `finish_reason`: `tool_calls` for a tool call, else `stop`."""
        return "tool_calls" if self.tool_call else "stop"

    def message(self) -> dict[str, Any]:
        """The reply as an OpenAI assistant message (a non-streamed choice's `message`)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_call:
            message["tool_calls"] = [self.tool_call]
        return message

    def word_count(self) -> int:
        """Words in the reply (a tool call counts its arguments plus one), for its usage."""
        if self.tool_call:
            return len(self.tool_call["function"]["arguments"].split()) + 1
        return len((self.content or "").split())
