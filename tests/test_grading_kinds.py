"""What standard kinds declare (needs_judge, blocking, async def) and how the one grading
function honours it from plain code (`grade`) and from async code (`agrade`).

Real parts: the registry, the built-in kinds, the GRADING worker pool, asyncio. The judge is a
test-local transport (no model is called): it records where and for which standard it was
called and returns a canned reply.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

import rubrics
from glow.errors import SpecError
from glow.models import Scenario
from rubrics import (
    GradingContext,
    KindParams,
    StandardOutcome,
    _registry,
    agrade,
    grade,
    require_judge,
    standard_kind,
)

REPLY = json.dumps({"score": 8, "rationale": "fine"})
JUDGE = {"criteria": "Names the capital of France.", "scale_max": 10}


def scenario(category: str = "free_text") -> Scenario:
    return Scenario(
        id="s", input="Capital of France?", reference="Paris", metadata={"category": category}
    )


class Transport:
    """A judge transport that is a plain function returning an awaitable, like an async one,
    recording the thread that called it (the kind's thread) and the standard being graded."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.standards: list[str | None] = []

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        self.threads.append(threading.current_thread().name)
        self.standards.append(rubrics.current_standard())

        async def reply() -> str:
            await asyncio.sleep(0)
            return REPLY

        return reply()


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private copy of the registry, so the test's kinds do not leak into other tests."""
    monkeypatch.setattr(_registry, "_KINDS", dict(_registry._KINDS))


def one_standard(kind: str, params: dict[str, Any] | None = None) -> Any:
    return rubrics.parse_rubric(
        {"name": "r", "standards": [{"name": "only", "kind": kind, "params": params or {}}]}
    )


def test_built_in_kinds_declare_what_they_need() -> None:
    judge, regex, python, exact = (
        rubrics.get_kind(k) for k in ("llm_judge", "regex", "python", "exact")
    )
    assert judge.needs_judge and judge.is_async and not judge.blocking
    assert regex.blocking and python.blocking and not regex.needs_judge
    assert not (exact.blocking or exact.needs_judge or exact.is_async)


def test_an_async_judge_kind_awaits_its_judge_on_the_loop() -> None:
    """llm_judge is async: from agrade its judge is called on the loop's thread, no hop."""
    transport = Transport()

    async def main() -> tuple[rubrics.Grade, str]:
        ctx = GradingContext(scenario(), "Paris", call_judge=transport)
        return await agrade(one_standard("llm_judge", JUDGE), ctx), threading.current_thread().name

    result, loop_thread = asyncio.run(main())
    assert result.score == pytest.approx(0.8) and result.standards[0].rationale == "fine"
    assert transport.threads == [loop_thread] and transport.standards == ["only"]


def test_a_sync_judge_kind_runs_off_the_loop_with_a_plain_judge(private_registry: None) -> None:
    """A sync kind that needs a judge runs on a worker thread and sees a plain function, even
    when the caller's transport is async: the reply comes back from the loop."""
    seen: list[tuple[str, Any]] = []

    @standard_kind("test_sync_judge", KindParams, needs_judge=True)
    def sync_judge(ctx: GradingContext, params: KindParams) -> StandardOutcome:
        """Asks the judge the plain way."""
        assert ctx.call_judge is not None
        reply = ctx.call_judge([{"role": "user", "content": "grade"}])
        seen.append((threading.current_thread().name, reply))
        return StandardOutcome(score=json.loads(str(reply))["score"] / 10)

    transport = Transport()

    async def main() -> rubrics.Grade:
        ctx = GradingContext(scenario(), "Paris", call_judge=transport)
        return await agrade(one_standard("test_sync_judge"), ctx)

    result = asyncio.run(main())
    assert result.score == pytest.approx(0.8) and result.standards[0].error is None
    ((thread, reply),) = seen
    assert thread.startswith("glow-grade") and reply == REPLY
    assert transport.standards == ["only"]


def test_an_async_kind_from_plain_code_and_never_on_a_running_loop(private_registry: None) -> None:
    @standard_kind("test_async", KindParams)
    async def async_kind(ctx: GradingContext, params: KindParams) -> StandardOutcome:
        """Awaits something, then scores."""
        await asyncio.sleep(0)
        return StandardOutcome.of(ctx.output == "Paris", "compared")

    rubric = one_standard("test_async")
    assert rubrics.get_kind("test_async").is_async
    assert grade(rubric, GradingContext(scenario(), "Paris")).score == 1.0

    # A kind's failure scores 0 with its error; here the error says to use agrade.
    result_error: list[str | None] = []

    async def record() -> None:
        result_error.append(grade(rubric, GradingContext(scenario(), "Paris")).standards[0].error)

    asyncio.run(record())
    assert result_error[0] is not None and "agrade" in result_error[0]


def test_the_two_doors_grade_alike() -> None:
    rubric = rubrics.load_rubric("quickstart")
    for category, output in [("exact", "Paris."), ("free_text", "Paris"), ("tool_use", "56")]:
        sync_judge = lambda messages: REPLY  # noqa: E731 - a plain transport
        ctx = GradingContext(scenario(category), output, call_judge=sync_judge)
        plain = grade(rubric, ctx)
        awaited = asyncio.run(agrade(rubric, ctx))
        assert plain == awaited, category


def test_judge_need_is_declared_not_named(private_registry: None) -> None:
    @standard_kind("test_asks_a_model", KindParams, needs_judge=True)
    async def asks(ctx: GradingContext, params: KindParams) -> StandardOutcome:
        """Would ask the judge."""
        return StandardOutcome(score=1.0)

    custom = one_standard("test_asks_a_model")
    assert [s.name for s in rubrics.judged_standards(custom)] == ["only"]
    assert rubrics.judged_standards(rubrics.load_rubric("exact_answer")) == []
    with pytest.raises(SpecError, match=r"only \(test_asks_a_model\).*add a `judge:`"):
        require_judge(custom, None, "test t")
    with pytest.raises(TypeError, match="cannot be blocking"):
        standard_kind("test_bad", KindParams, blocking=True)(asks)


def test_graded_categories_from_the_rubric() -> None:
    rubric = rubrics.parse_rubric(
        {
            "name": "mixed",
            "standards": [
                {"name": "a", "kind": "exact", "params": {"categories": ["exact"]}},
                {"name": "b", "kind": "exact", "weight": 0, "params": {"categories": ["zero"]}},
            ],
        }
    )
    assert rubrics.graded_categories(rubric, ["exact", "zero", "other", None]) == {"exact"}
