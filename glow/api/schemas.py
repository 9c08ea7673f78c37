"""Request and response bodies of the HTTP API.

They wrap the one schema (`glow.models`) rather than restate it: an invocation is returned as
`Invocation`, a run as `Run`, a draft as `Draft`, a test as `TestRecord`. Only the envelopes
(ids to address, paging, flags) are declared here. Unknown fields are refused (422), so a typo
in a body is never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)

from glow.models import (
    MAX_EPOCHS,
    AgentSpec,
    Draft,
    Invocation,
    ModelSpec,
    Rubric,
    Run,
    Status,
    TestRecord,
    TestSpec,
    check_params,
)

MAX_PAGE_SIZE = 500  # rows a page holds at most
MAX_PAGE_SIZE_ASKED = 1000  # what a request may ask for (bounded, so 1e20 is a 422, not a 500)


class Body(BaseModel):
    """Base of request bodies: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    code: str = Field(
        description="bad_request, unauthorized, not_found, conflict, "
        "validation_error, method_not_allowed or internal_error."
    )
    message: str


class ErrorResponse(BaseModel):
    """The one shape of every error the API returns."""

    error: ErrorDetail


# --------------------------------------------------------------------------- invocations


class InvocationRef(Body):
    invocation_id: str = Field(min_length=1)


class InvocationGetRequest(InvocationRef):
    include_trace: bool = Field(True, description="False leaves each run's trace out.")


class InvocationListRequest(Body):
    test_id: str = Field(min_length=1)
    page_size: int = Field(
        25,
        ge=1,
        le=MAX_PAGE_SIZE_ASKED,
        description=f"Rows per page, 1..{MAX_PAGE_SIZE_ASKED}; a page holds at most "
        f"{MAX_PAGE_SIZE}.",
    )
    page_token: str | None = Field(None, description="`next_page_token` of the previous page.")
    status: Status | None = None
    model: str | None = Field(None, description="A model's display name.")


class InvocationPage(BaseModel):
    invocations: list[Invocation]
    next_page_token: str | None = Field(None, description="Absent on the last page.")


class InvocationCreateRequest(Body):
    """A test cell (test_id, scenario_id, model, agent, epoch) or a draft to promote."""

    draft_id: str | None = None
    test_id: str | None = None
    scenario_id: str | None = None
    model: str | None = Field(None, description="A model's display name in the test.")
    agent: str | None = Field(None, description="An agent's name; default the test's first.")
    epoch: int = Field(1, ge=1, le=MAX_EPOCHS)

    @model_validator(mode="after")
    def _cell_or_draft(self) -> InvocationCreateRequest:
        if self.draft_id is None:
            # Empty counts as missing: "" would otherwise reach the op and fail there (a 500).
            missing = [f for f in ("test_id", "scenario_id", "model") if not getattr(self, f)]
            if missing:
                raise ValueError(f"give draft_id, or a cell: missing {', '.join(missing)}")
        return self


class InvocationRunStarted(BaseModel):
    invocation_id: str
    run_id: str = Field(description="The new run, with its own trace.")
    run_number: int
    status: Status
    flow_run_id: str | None = Field(None, description="The Prefect flow run carrying it out.")


class InvocationCompleteRequest(InvocationRef):
    output: str | None = Field(None, description="The output to record, if supplied by hand.")
    scores: dict[str, float] | None = Field(
        None, description="Per rubric standard, 0..1, if supplied by hand."
    )

    @model_validator(mode="after")
    def _scores_in_range(self) -> InvocationCompleteRequest:
        for name, value in (self.scores or {}).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"scores.{name}: a score is between 0 and 1, got {value}")
        return self


class InvocationTerminateRequest(InvocationRef):
    reason: str | None = Field(None, max_length=2000)


class InvocationTraceRequest(Body):
    test_id: str | None = None
    test_invocation_id: str | None = Field(None, description="The invocation id.")
    invocation_id: str | None = Field(None, description="Alias of test_invocation_id.")
    run_id: str | None = Field(None, description="A recorded run; default the latest.")

    @model_validator(mode="after")
    def _one_invocation(self) -> InvocationTraceRequest:
        if self.test_invocation_id is None and self.invocation_id is None:
            raise ValueError("test_invocation_id: give the invocation's id")
        if (
            self.test_invocation_id is not None
            and self.invocation_id is not None
            and self.test_invocation_id != self.invocation_id
        ):
            raise ValueError("test_invocation_id and invocation_id name different invocations")
        return self

    @property
    def target(self) -> str:
        return str(self.test_invocation_id or self.invocation_id)


class BundleConfig(BaseModel):
    """The resolved configuration an invocation runs with."""

    model: ModelSpec
    agent: AgentSpec
    rubric: Rubric


class TraceEntry(BaseModel):
    test_invocation_trace_id: str = Field(
        description="Deterministic: the same invocation, run and config give the same id."
    )
    test_id: str
    invocation_id: str
    run_id: str
    config: BundleConfig
    config_hash: str
    run: Run


def _draft_edit_model() -> type[BaseModel]:
    """Every field of `Draft` (but its timestamps), optional: a create or a partial edit.

    Each field keeps its constraints (`epoch` 1..MAX_EPOCHS): one schema, checked here first."""
    fields: dict[str, Any] = {
        name: (info.rebuild_annotation() | None, Field(None, description=info.description))
        for name, info in Draft.model_fields.items()
        if name not in ("created_at", "updated_at")
    }
    # Draft's own params check, as a 422 on the request (validators are not copied above).
    fields["params"] = (
        Annotated[dict[str, Any] | None, AfterValidator(lambda p: p and check_params(p))],
        fields["params"][1],
    )
    return create_model(  # type: ignore[call-overload,no-any-return]
        "DraftEdit",
        __base__=Body,
        __doc__="Without draft_id: a new draft (test_id needed). With it: edit the given fields.",
        **fields,
    )


DraftEdit = _draft_edit_model()


class TestRef(Body):
    __test__ = False

    test_id: str = Field(min_length=1)


class DraftList(BaseModel):
    drafts: list[Draft]


# --------------------------------------------------------------------------- tests


class TestPath(Body):
    """A test YAML file on the server's disk."""

    __test__ = False

    path: str = Field(min_length=1)


def _spec_or_path(value: Any) -> str:
    return "@path" if isinstance(value, dict) and "path" in value else "@spec"


# A body with `path` is a file on the server, any other a spec: one member is validated, so a
# bad field is reported once (`epochs: ...`), not once per member of the union. The "@" tags
# are left out of the field paths errors name (glow.api.errors).
TestCreateRequest = Annotated[
    Annotated[TestSpec, Tag("@spec")] | Annotated[TestPath, Tag("@path")],
    Discriminator(_spec_or_path),
]


class TestInfo(BaseModel):
    __test__ = False

    test: TestRecord
    counts: dict[str, int] = Field(description="Invocations per status.")


class TestListRequest(Body):
    __test__ = False

    limit: int = Field(100, ge=1, le=1000)


class TestList(BaseModel):
    __test__ = False

    tests: list[TestRecord]


class TestRunStarted(BaseModel):
    __test__ = False

    test_id: str
    flow_run_id: str
    status: str = "running"


class ResultsRequest(TestRef):
    rebuild: bool = Field(False, description="Rebuild from the store even if files exist.")


class ResultsResponse(BaseModel):
    test_id: str
    rows: list[dict[str, Any]] = Field(description="AggregatedResults rows (AggregatedRow).")
    paths: dict[str, str]
