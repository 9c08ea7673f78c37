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
from glow.grading import grade_run
from glow.models import Rubric, Scenario, StandardSpec
from rubrics import GradingContext, grade

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


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_spinning_grader_dies_with_its_parent(slow_graders: str, tmp_path: Path) -> None:
    """kill -9 of the process grading leaves no grader spinning behind it."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "grading.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import sys
            sys.path.insert(0, {str(tmp_path)!r})
            import rubrics
            from glow.models import Rubric, Scenario, StandardSpec
            from rubrics import GradingContext, grade
            params = {{"function": "{slow_graders}:forever", "timeout_s": 600}}
            spec = StandardSpec(name="s", kind="python", params=params)
            rubric = Rubric(name="r", standards=[spec])
            rubrics.validate_rubric(rubric)
            print("grading", flush=True)
            grade(rubric, GradingContext(Scenario(id="s", input="q"), "x"))
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"grading\n"
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while not workers and time.monotonic() < deadline:
            workers = [p for p in _children(parent.pid) if _alive(p)]
            time.sleep(0.2)
        assert workers, "no grader process started"
        time.sleep(1.0)  # the grader is spinning now
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), f"grader processes {workers} outlived it"
    finally:
        if parent.poll() is None:
            parent.kill()
