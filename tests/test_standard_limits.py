"""Regex and python standards have a time limit and never stall the event loop (issue 11, point 7).

A catastrophic regex or a python grader that loops forever fails its standard with a clear
error within its limit, while other coroutines on the same loop (other cells, the API) go on.
Real parts: the real `grade_run`, the `regex` engine, real spawned grader processes.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from pathlib import Path

import pytest

import rubrics
from glow.models import Rubric, Scenario, StandardSpec
from rubrics import GradingContext, grade
from tasks.grade import grade_run

CATASTROPHIC = r"(a|aa)+$"  # exponential backtracking, in `re` and in `regex` alike
EVIL_OUTPUT = "a" * 60 + "!"


def _rubric(kind: str, params: dict[str, object]) -> Rubric:
    rubric = Rubric(name="limits", standards=[StandardSpec(name="s", kind=kind, params=params)])
    rubrics.validate_rubric(rubric)
    return rubric


def _scenario() -> Scenario:
    return Scenario(id="s1", input="Q?", reference="a")


def test_catastrophic_regex_fails_its_standard_within_the_limit() -> None:
    rubric = _rubric("regex", {"pattern": CATASTROPHIC, "timeout_s": 0.5})
    started = time.monotonic()
    result = grade(rubric, GradingContext(_scenario(), EVIL_OUTPUT))
    elapsed = time.monotonic() - started
    (only,) = result.standards
    assert only.score == 0.0 and only.error is not None
    assert "backtracks catastrophically" in only.error and "0.5 s" in only.error, only.error
    assert elapsed < 5, elapsed  # the limit, plus the engine's coarse clock; not minutes
    # An ordinary output still matches as before.
    fine = grade(_rubric("regex", {"pattern": r"a+$"}), GradingContext(_scenario(), "aaa"))
    assert fine.standards[0].score == 1.0


@pytest.fixture
def slow_graders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "slow_graders.py").write_text(
        textwrap.dedent(
            """\
            import os

            def forever(output, scenario):
                while True:
                    pass

            def quick(output, scenario):
                return 1.0, f"pid {os.getpid()}"

            def crash(output, scenario):
                os._exit(3)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "slow_graders"


def test_python_grader_that_never_returns_is_stopped(slow_graders: str) -> None:
    rubric = _rubric("python", {"function": f"{slow_graders}:forever", "timeout_s": 1})
    started = time.monotonic()
    result = grade(rubric, GradingContext(_scenario(), "x"))
    elapsed = time.monotonic() - started
    (only,) = result.standards
    assert only.score == 0.0 and only.error is not None
    assert "GraderTimeout" in only.error and "took over 1 s" in only.error, only.error
    assert elapsed < 30, elapsed  # 1 s plus a worker's start-up on a busy machine
    # The runaway was killed, not left spinning: the next call gets a fresh, working worker.
    quick = grade(_rubric("python", {"function": f"{slow_graders}:quick"}), _ctx())
    assert quick.standards[0].score == 1.0
    worker_pid = int((quick.standards[0].rationale or "").split()[-1])
    assert worker_pid != os.getpid()  # it ran in a grader process, not here
    # A grader that kills its own interpreter fails its standard, and takes nothing else down.
    crashed = grade(_rubric("python", {"function": f"{slow_graders}:crash"}), _ctx())
    assert "process died" in (crashed.standards[0].error or ""), crashed.standards[0]
    assert grade(_rubric("python", {"function": f"{slow_graders}:quick"}), _ctx()).score == 1.0


def _ctx() -> GradingContext:
    return GradingContext(_scenario(), "x")


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("regex", {"pattern": CATASTROPHIC, "timeout_s": 1.5}),
        ("python", {"function": "slow_graders:forever", "timeout_s": 1.5}),
    ],
)
def test_a_slow_standard_does_not_stall_the_event_loop(
    kind: str, params: dict[str, object], slow_graders: str
) -> None:
    """grade_run (what run-invocation awaits) keeps the loop free while a standard grinds."""

    async def scenario() -> tuple[float, list[float]]:
        gaps: list[float] = []
        grading = asyncio.ensure_future(
            grade_run(
                rubric=_rubric(kind, params),
                scenario=_scenario(),
                output=EVIL_OUTPUT,
                trace=[],
                test_id="t",
                invocation_id="i",
                run_id="r",
                judge=None,
            )
        )
        last = time.monotonic()
        while not grading.done():  # another cell's work: ticks every 20 ms
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        result = await grading
        assert result.scores[0].score == 0.0
        return max(gaps), gaps

    worst, gaps = asyncio.run(scenario())
    assert len(gaps) > 10, gaps  # the loop ran all along
    assert worst < 0.5, f"the loop stalled for {worst:.2f} s while a {kind} standard graded"
