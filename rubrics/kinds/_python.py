"""`python`: a Python function grades the output, for checks no declarative kind expresses.

The function is named by import path, `package.module:function` (or `module:Class.method`),
and is resolved when the rubric is loaded so a typo fails before any model is called. It is
called as `fn(output, scenario, **args)` and returns a float in 0..1, a bool, a
`(score, rationale)` pair, or a `StandardOutcome`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind


class PythonParams(KindParams):
    function: str = Field(description="Import path module:function.")
    args: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments.")

    @field_validator("function")
    @classmethod
    def _importable(cls, path: str) -> str:
        resolve(path)
        return path


def resolve(path: str) -> Callable[..., Any]:
    """The callable at `module:attr.attr`; ValueError saying what is wrong otherwise."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"{path!r} is not an import path of the form module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # a grader module's own import errors are the user's to see too
        raise ValueError(f"cannot import module {module_name!r} for {path!r}: {err}") from None
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ValueError(f"{path!r}: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise ValueError(f"{path!r} is not callable (it is a {type(target).__name__})")
    return target


def to_outcome(result: Any, path: str) -> StandardOutcome:
    """Accept the few return shapes a grader function naturally produces."""
    if isinstance(result, StandardOutcome):
        return result
    rationale: str | None = None
    if isinstance(result, tuple) and len(result) == 2:
        result, rationale = result
        rationale = None if rationale is None else str(rationale)
    if isinstance(result, bool):
        return StandardOutcome.of(result, rationale)
    if isinstance(result, int | float):
        if not 0 <= result <= 1:
            raise ValueError(f"{path} returned {result!r}, outside 0..1")
        return StandardOutcome(score=float(result), rationale=rationale)
    raise TypeError(
        f"{path} returned {type(result).__name__}; expected a float, a bool, "
        "(score, rationale) or StandardOutcome"
    )


@standard_kind("python", PythonParams)
def python(ctx: GradingContext, params: PythonParams) -> StandardOutcome:
    """Whatever the named function returns, as a 0..1 score; it also sees a None output."""
    fn = resolve(params.function)
    return to_outcome(fn(ctx.output, ctx.scenario, **params.args), params.function)
