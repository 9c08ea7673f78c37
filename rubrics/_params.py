"""Turning a standard's raw `params` into what its kind's function takes.

`params` holds the kind's own params plus one reserved key, `categories`, which any standard
may carry: it limits the standard to scenarios of those categories. It is split off here, before
the rest is validated against the kind's params model (which forbids unknown keys).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from glow.models import StandardSpec
from rubrics._registry import StandardKind, get_kind

CATEGORIES_KEY = "categories"


class CategoriesError(ValueError):
    """`params.categories` is not a non-empty list of category names."""


def categories_of(spec: StandardSpec) -> frozenset[str] | None:
    """The categories a standard is limited to, or None when it applies to every scenario."""
    raw = spec.params.get(CATEGORIES_KEY)
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(c, str | int) and str(c) for c in raw)
    ):
        raise CategoriesError(f"must be a non-empty list of category names, got {raw!r}")
    return frozenset(str(c) for c in raw)


def kind_params(spec: StandardSpec) -> tuple[StandardKind, BaseModel]:
    """The standard's kind and its params validated by the kind's model.

    Raises `UnknownKind` or pydantic's `ValidationError`; the loader turns both into SpecError.
    """
    kind = get_kind(spec.kind)
    own: dict[str, Any] = {k: v for k, v in spec.params.items() if k != CATEGORIES_KEY}
    return kind, kind.params.model_validate(own)


def applies_to(spec: StandardSpec, category: str) -> bool:
    """Whether the standard grades a scenario of `category`."""
    categories = categories_of(spec)
    return categories is None or category in categories
