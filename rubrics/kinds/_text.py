"""Text normalisation shared by the string-comparing kinds."""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def strip_punctuation(text: str) -> str:
    # Unicode categories rather than string.punctuation, so curly quotes and dashes count too.
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


def normalize(
    text: str,
    *,
    case_sensitive: bool = False,
    strip: bool = True,
    normalize_whitespace: bool = True,
    ignore_punctuation: bool = False,
) -> str:
    """Apply the comparisons' leniencies in a fixed order (punctuation first, then spacing)."""
    if ignore_punctuation:
        text = strip_punctuation(text)
    if normalize_whitespace:
        text = _WHITESPACE.sub(" ", text)
    if strip:
        text = text.strip()
    if not case_sensitive:
        text = text.casefold()
    return text


def shorten(text: str, limit: int = 80) -> str:
    """A rationale-sized excerpt of `text`."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
