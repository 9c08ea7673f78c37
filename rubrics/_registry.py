"""The registry of standard kinds: a kind name -> (params model, grading function, needs).

A kind is registered with the `standard_kind` decorator, Inspect-style:

    class ExactParams(KindParams):
        case_sensitive: bool = False

    @standard_kind("exact", ExactParams)
    def exact(ctx: GradingContext, params: ExactParams) -> StandardOutcome: ...

    @standard_kind("llm_judge", LlmJudgeParams, needs_judge=True)
    async def llm_judge(ctx: GradingContext, params: LlmJudgeParams) -> StandardOutcome: ...

A kind declares what it needs, so the engine never names one: `needs_judge` (it calls the judge
model: a test whose rubric has one must name a `judge:`), `blocking` (a sync kind that may hold
its thread for a while, a regex or a python grader up to its time limit: graded on a worker
thread, off the event loop). A kind may be `async def` (detected as Inspect AI detects async
scorers, with `inspect.iscoroutinefunction`): it is awaited on the event loop, and awaits its
judge there, with no thread hop.

Rubric files name kinds by string, and each standard's `params` is validated against the kind's
params model when the rubric is loaded, so a typo fails before any model is called.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome

P = TypeVar("P", bound=BaseModel)
GradeFn = Callable[[GradingContext, Any], StandardOutcome | Awaitable[StandardOutcome]]
F = TypeVar("F", bound=GradeFn)


class KindParams(BaseModel):
    """Base for a kind's params: unknown keys are errors, as everywhere in user-written files."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class StandardKind:
    """A registered kind: its name, params model, grading function, one-line description, and
    what it needs (see the module docstring)."""

    name: str
    params: type[BaseModel]
    fn: GradeFn
    description: str
    needs_judge: bool = False
    blocking: bool = False

    @property
    def is_async(self) -> bool:
        """Whether `fn` is a coroutine function (awaited on the event loop)."""
        return inspect.iscoroutinefunction(self.fn)


class UnknownKind(KeyError):
    """A kind name nobody registered. The message lists the known kinds."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else "unknown standard kind"


_KINDS: dict[str, StandardKind] = {}


def standard_kind(
    name: str, params: type[P], *, needs_judge: bool = False, blocking: bool = False
) -> Callable[[F], F]:
    """Register a grading function `fn(ctx, params) -> StandardOutcome` (or an `async def`
    one) under `name`, with what it needs: `needs_judge` (it calls `ctx.ask_judge`),
    `blocking` (sync, and may hold its thread for a while: run off the event loop).

    `params` must forbid extra fields (subclass `KindParams`), so misspelt params in a rubric
    are reported rather than silently ignored. The function is returned unchanged.
    """
    if params.model_config.get("extra") != "forbid":
        raise TypeError(f"params model of kind {name!r} must forbid extra fields (KindParams)")

    def register(fn: F) -> F:
        existing = _KINDS.get(name)
        if existing is not None and _qualname(existing.fn) != _qualname(fn):
            raise ValueError(
                f"standard kind {name!r} is already registered by {_qualname(existing.fn)}"
            )
        doc = (fn.__doc__ or "").strip().splitlines()
        if blocking and inspect.iscoroutinefunction(fn):
            raise TypeError(f"kind {name!r}: an async def kind cannot be blocking (it awaits)")
        _KINDS[name] = StandardKind(
            name, params, fn, doc[0] if doc else "", needs_judge=needs_judge, blocking=blocking
        )
        return fn

    return register


def get_kind(name: str) -> StandardKind:
    """The registered kind `name`; `UnknownKind` (a KeyError) listing the known ones otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownKind(
            f"unknown standard kind {name!r}; known kinds: {', '.join(kinds())}"
        ) from None


def kinds() -> list[str]:
    """Names of all registered kinds, sorted."""
    return sorted(_KINDS)


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
