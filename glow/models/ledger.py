"""The ledger: what the store records of a test as it runs (invocations, runs, traces,
generations, standard scores, drafts), the API returns as is and the parquet files derive from.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    field_validator,
)

from glow.models.common import slugify, utcnow
from glow.models.spec import (
    MAX_EPOCHS,
    AgentSpec,
    Modality,
    ModelSpec,
    Rubric,
    Scenario,
    TestSpec,
    check_params,
)
from glow.secrets import redact, redact_deep


def _redacted(value: str | None) -> str | None:
    return redact(value) if value else value


# Error text and rationales come from providers, libraries, tools and graders, any of which may
# echo a credential from the environment: masked whenever such a row is built, as a last line
# behind the masking where each error is caught.
Redacted = Annotated[str | None, AfterValidator(_redacted)]


class Status(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    terminated = "terminated"


FINAL_STATUSES = frozenset({Status.completed, Status.failed, Status.terminated})


# Error types of an invocation that failed in grading, not in its model call: a standard could
# not be computed for an infrastructure reason, so its score is unknown (never 0). The model's
# output, generations and trace are kept, and `--resume`, `glow regrade` and `invocation_run`
# grade the recorded output again without calling the model under test.
JUDGE_ERROR = "judge_error"  # the judge call failed after retries, or its reply had no score


JUDGE_BUDGET_EXHAUSTED = "judge_budget_exhausted"  # the test's budget_usd refused the judge call


GRADING_ERRORS = frozenset({JUDGE_ERROR, JUDGE_BUDGET_EXHAUSTED})


INVOCATION_NAMESPACE = uuid.UUID("6f1c1b5e-8f8a-4b8e-9a57-0c6f3c0a9d21")


def invocation_id_for(test_id: str, scenario_id: str, model: str, agent: str, epoch: int) -> str:
    """Stable id of a cell, so a re-run of the same test resumes instead of duplicating."""
    key = json.dumps([test_id, scenario_id, model, agent, epoch])
    return str(uuid.uuid5(INVOCATION_NAMESPACE, key))


class Cell(BaseModel):
    """One cell of a test's cross product, as the flow hands it to `run-invocation`."""

    test_id: str
    scenario_id: str
    model: str
    agent: str
    epoch: int = 1

    @property
    def invocation_id(self) -> str:
        return invocation_id_for(self.test_id, self.scenario_id, self.model, self.agent, self.epoch)

    @classmethod
    def of(cls, invocation: Invocation) -> Cell:
        """The cell a stored invocation belongs to."""
        return cls(
            test_id=invocation.test_id,
            scenario_id=invocation.scenario_id,
            model=invocation.model,
            agent=invocation.agent,
            epoch=invocation.epoch,
        )

    @property
    def label(self) -> str:
        return slugify(f"{self.scenario_id}-{self.model}-{self.agent}-e{self.epoch}")


class TraceEvent(BaseModel):
    """One step of a run: a model or judge call, a tool call, its result, an error, a note."""

    kind: Literal["model_call", "tool_call", "tool_result", "error", "grading", "note"]
    at: datetime = Field(default_factory=utcnow)
    request: dict[str, Any] | None = Field(None, description="Messages and params, no secrets.")
    response: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    attempt: int | None = None
    name: str | None = Field(None, description="Tool or standard name.")
    content: Any = None
    error_type: str | None = None
    error_message: Redacted = None

    @field_validator("content")
    @classmethod
    def _redact_content(cls, content: Any) -> Any:
        # Tool results and graders' rationales are free text that may echo a credential.
        return redact_deep(content) if content is not None else content


class Generation(BaseModel):
    """One model call (the model's or a judge's): the row that carries tokens and cost."""

    generation_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    test_id: str
    invocation_id: str
    run_id: str
    role: Literal["model", "judge"] = "model"
    model: str
    litellm_model: str
    provider: str
    standard: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(None, description="None when the price is unknown, never 0.")
    latency_s: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class StandardScore(BaseModel):
    """The score of one standard for one run, and which rubric version gave it."""

    invocation_id: str
    run_id: str
    grading_id: str = Field(description="One grading pass; regrades get a new one.")
    rubric: str
    rubric_version: str
    standard: str
    kind: str
    weight: float
    score: float = Field(ge=0, le=1)
    passed: bool
    rationale: Redacted = None
    created_at: datetime = Field(default_factory=utcnow)


class Run(BaseModel):
    """One attempt of an invocation, with its own trace."""

    run_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    invocation_id: str
    number: int = 1
    status: Status = Status.running
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    output: str | None = None
    error_type: str | None = None
    error_message: Redacted = None
    trace: list[TraceEvent] = Field(default_factory=list)


class Invocation(BaseModel):
    """One cell of a test: its configuration, status, latest output, scores, cost and runs."""

    invocation_id: str
    test_id: str
    scenario_id: str
    category: str = "uncategorised"
    model: str
    agent: str
    provider: str
    epoch: int = 1
    modalities: list[Modality] = Field(default_factory=lambda: [Modality.text])
    status: Status = Status.queued
    attempts: int = 0
    output: str | None = None
    scores: dict[str, float] = Field(default_factory=dict, description="Per standard, 0..1.")
    score: float | None = Field(None, description="Weighted overall score, 0..1.")
    passed: bool | None = None
    rubric: str | None = Field(None, description="name@version of the grading in `scores`.")
    input_tokens: int = 0
    output_tokens: int = 0
    model_cost_usd: float | None = None
    judge_cost_usd: float | None = None
    cost_usd: float | None = Field(None, description="model + judge; None if either is unknown.")
    latency_s: float | None = None
    error_type: str | None = None
    error_message: Redacted = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    runs: list[Run] = Field(default_factory=list, description="Filled when hydrated.")


class SkippedCell(BaseModel):
    """A cell not run because the model lacks a modality the scenario needs."""

    scenario_id: str
    model: str
    agent: str
    missing: list[Modality]


class TestRecord(BaseModel):
    """A test as stored: its spec, resolved rubric, and bookkeeping."""

    __test__ = False

    test_id: str
    name: str
    spec: TestSpec
    rubric: Rubric
    spec_path: str | None = None
    status: Literal["created", "running", "completed", "cancelled", "budget_exhausted"] = "created"
    skipped: list[SkippedCell] = Field(default_factory=list)
    flow_run_id: str | None = None
    # Bumped by the store on every change to what defines the test (spec, rubric, skipped
    # cells, spec_path): per-process caches of the resolved test are keyed by it.
    revision: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Draft(BaseModel):
    """An invocation being edited before it is created or run."""

    draft_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    test_id: str
    scenario: Scenario | None = None
    scenario_id: str | None = None
    model: ModelSpec | str | None = None
    agent: AgentSpec | str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    epoch: int = Field(1, ge=1, le=MAX_EPOCHS)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return check_params(params)  # merged into the model's params when promoted
