"""What a grading function may look at: the scenario, the final answer, the trace, a judge."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from glow.models import Scenario, TraceEvent

JudgeFn = Callable[[list[dict[str, Any]]], str | Awaitable[str]]
"""Sends OpenAI-style chat messages to the judge model and returns the reply text (a plain
function, or an `async def` one: the engine's transport is async, a test's may be plain)."""

# grade() sets this around each standard so that the caller's judge transport can tag the judge
# call (Generation.standard) without the call_judge signature carrying rubric details.
_current_standard: ContextVar[str | None] = ContextVar("glow_current_standard", default=None)


def current_standard() -> str | None:
    """Name of the standard being graded right now, or None outside `grade()`."""
    return _current_standard.get()


@dataclass
class GradingContext:
    """Everything a standard kind can grade against for one run of one scenario.

    `call_judge` is injected by the caller, which owns the judge model, its cost accounting and
    trace recording; rubrics never import litellm, so they stay testable without a network.
    Kinds reach it through `await ctx.ask_judge(messages)`, whichever form it has.
    """

    scenario: Scenario
    output: str | None
    trace: list[TraceEvent] = field(default_factory=list)
    call_judge: JudgeFn | None = None
    # How many more times a judge reply without a score is asked for again before the standard
    # is given up as a grading error (the caller passes the test's max_retries).
    judge_retries: int = 2

    async def ask_judge(self, messages: list[dict[str, Any]]) -> str:
        """The judge's reply to `messages`, awaited when the transport is async.

        Raises `LookupError` when no judge transport was given; kinds turn that into their own
        error (see `rubrics.kinds.JudgeUnavailable`).
        """
        if self.call_judge is None:
            raise LookupError("no judge transport was given to the grader")
        reply = self.call_judge(messages)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply

    @property
    def references(self) -> list[str]:
        return self.scenario.references

    @property
    def question(self) -> str:
        """The scenario's prompt as text: the string input, or the user messages' text parts."""
        return question_text(self.scenario)


def question_text(scenario: Scenario) -> str:
    """The text a human (or judge) would read as the question; non-text parts are noted."""
    if isinstance(scenario.input, str):
        return scenario.input
    chunks: list[str] = []
    for message in scenario.input:
        if message.role != "user":
            continue
        if isinstance(message.content, str):
            chunks.append(message.content)
            continue
        for part in message.content:
            if part.type == "text" and part.text:
                chunks.append(part.text)
            elif part.type != "text":
                # The judge cannot see media; saying it was there keeps its grading honest.
                chunks.append(f"[{part.type} attached]")
    return "\n".join(chunks)
