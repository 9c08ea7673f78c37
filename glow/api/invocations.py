"""The invocation ops: `POST /test/invocation_<op>` and `POST /test/invocations`.

Every status change goes through the store's guarded transitions (`start_run`, `transition`,
`finish_run`), so the API, `glow run` processes and Prefect workers can act on the same
invocation at once and the lifecycle still holds: a refused change is a 409 naming the status.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glow.api.deps import ERRORS, StoreDep
from glow.api.errors import ApiError
from glow.api.guard import JsonRoute
from glow.api.schemas import (
    MAX_PAGE_SIZE,
    BundleConfig,
    DraftEdit,
    DraftList,
    InvocationCompleteRequest,
    InvocationCreateRequest,
    InvocationGetRequest,
    InvocationListRequest,
    InvocationPage,
    InvocationRef,
    InvocationRunStarted,
    InvocationTerminateRequest,
    InvocationTraceRequest,
    TestRef,
    TraceEntry,
)
from glow.errors import TransitionError
from glow.models import (
    Draft,
    Invocation,
    Run,
    Status,
    TraceEvent,
    config_hash,
    utcnow,
)
from glow.store import COMPLETABLE, RERUNNABLE, TERMINABLE, Store
from glow.threads import STORE, run_in

router = APIRouter(prefix="/test", tags=["invocations"], responses=ERRORS, route_class=JsonRoute)

TRACE_NAMESPACE = uuid.UUID("0b7c1e4a-55d2-4c43-9d0e-2f4f3f5b7a10")
_TOKEN_PREFIX = "inv:"


# --------------------------------------------------------------------------- reading


@router.post("/invocation_get", response_model=Invocation)
def invocation_get(body: InvocationGetRequest, store: StoreDep) -> Invocation:
    """Hydrate one invocation: its fields, every run, and each run's trace (unless excluded)."""
    return store.get_invocation(body.invocation_id, runs=True, trace=body.include_trace)


def encode_page_token(invocation_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{invocation_id}".encode()).decode()


def decode_page_token(token: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise ApiError(422, "page_token: not a token this API issued (pass next_page_token)")
    return text.removeprefix(_TOKEN_PREFIX)


@router.post("/invocations", response_model=InvocationPage)
async def invocations(body: InvocationListRequest, store: StoreDep) -> Response:
    """One page of a test's invocations, in id order.

    Keyset pagination (the token carries the last id), so paging through a test returns every
    row exactly once even while invocations change status.
    """
    # Each row arrives as its JSON text (`Store.list_invocations_json`) and the page is joined
    # around them, with no pydantic model or JSON encoder per row. The store call runs on
    # Glow's store threads, never on the event loop: a read that waits (a writer holding
    # SQLite's lock, a slow network database) must not stall /health and every other request.
    return await run_in(STORE, _invocation_page, body, store)  # type: ignore[no-any-return]


def _invocation_page(body: InvocationListRequest, store: Store) -> Response:
    try:
        after = decode_page_token(body.page_token) if body.page_token else None
    except ApiError:
        store.get_test(body.test_id)  # an unknown test is a 404 before a bad token is a 422
        raise
    size = min(body.page_size, MAX_PAGE_SIZE)
    rows = store.list_invocations_json(
        body.test_id, status=body.status, model=body.model, after=after, limit=size + 1
    )
    if not rows:
        store.get_test(body.test_id)  # no rows: 404 if the test itself is unknown
    parts = ['{"invocations":[', ",".join(text for _, text in rows[:size]), "]"]
    if len(rows) > size:
        parts += [',"next_page_token":', json.dumps(encode_page_token(rows[size - 1][0]))]
    parts.append("}")
    return Response("".join(parts).encode(), media_type="application/json")


_PAGES_ROUTE = ("POST", "/test/invocations")


class InvocationPages:
    """ASGI fast path for `POST /test/invocations`, the API's hottest read.

    FastAPI's request machinery (the middleware chain, routing, body parsing, dependency
    solving) costs a sizeable fraction of a page's own store work (bench/PROFILE.md), and
    every client queues behind it. Here a body that
    validates is answered by `_invocation_page` directly. Anything else (another method, a body
    the schema refuses, an unknown test or bad page token, any error at all) goes on to the
    FastAPI app with the body replayed: the route there answers it, so errors, their shapes
    and the OpenAPI document stay FastAPI's alone. Sits inside `BearerAuth` and `JsonBody`, so
    the token, the body's type and its size are checked first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != _PAGES_ROUTE:
            await self.app(scope, receive, send)
            return
        chunks, last = [], None
        while True:
            last = await receive()
            if last["type"] != "http.request":  # the client went away: FastAPI sees it too
                break
            chunks.append(last.get("body", b""))
            if not last.get("more_body", False):
                last = None
                break
        body = b"".join(chunks)
        response = None if last is not None else await run_in(STORE, self._page, scope, body)
        if response is not None:
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return last if last is not None else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _page(scope: Scope, body: bytes) -> Response | None:
        """The page for a plain success; None for FastAPI's route to answer instead."""
        try:
            store: Store = scope["app"].state.store
            return _invocation_page(InvocationListRequest.model_validate_json(body), store)
        except Exception:  # noqa: BLE001 - the route raises it again and answers properly
            return None


@router.post("/invocation_trace", response_model=TraceEntry)
def invocation_trace(body: InvocationTraceRequest, store: StoreDep) -> TraceEntry:
    """The trace entry binding an invocation to its bundle config and one recorded run."""
    from glow.context import context_for

    inv = store.get_invocation(body.target, runs=True, trace=True)
    if body.test_id is not None and body.test_id != inv.test_id:
        raise ApiError(404, f"invocation {inv.invocation_id!r} is not in test {body.test_id!r}")
    if not inv.runs:
        raise ApiError(
            409,
            f"invocation {inv.invocation_id} is {inv.status.value} and has no recorded run "
            "yet; run it with invocation_run",
        )
    if body.run_id is None:
        run = inv.runs[-1]
    else:
        run = next((r for r in inv.runs if r.run_id == body.run_id), None)
        if run is None:
            raise ApiError(
                404, f"run {body.run_id!r} is not a run of invocation {inv.invocation_id}"
            )
    ctx = context_for(inv.test_id, store)
    config = BundleConfig(
        model=ctx.models[inv.model], agent=ctx.agents[inv.agent], rubric=ctx.loaded.rubric
    )
    digest = config_hash(config.model, config.agent, config.rubric)
    key = json.dumps([inv.test_id, inv.invocation_id, run.run_id, digest])
    return TraceEntry(
        test_invocation_trace_id=str(uuid.uuid5(TRACE_NAMESPACE, key)),
        test_id=inv.test_id,
        invocation_id=inv.invocation_id,
        run_id=run.run_id,
        config=config,
        config_hash=digest,
        run=run,
    )


# --------------------------------------------------------------------------- lifecycle


@router.post("/invocation_create", response_model=Invocation)
def invocation_create(body: InvocationCreateRequest, store: StoreDep) -> Invocation:
    """Seed a queued invocation for a test cell, or promote a draft (the draft is removed)."""
    from glow.api.cells import create_cell, promote_draft

    if body.draft_id is not None:
        return promote_draft(store, store.get_draft(body.draft_id))
    assert body.test_id and body.scenario_id and body.model  # checked by the schema
    return create_cell(store, body.test_id, body.scenario_id, body.model, body.agent, body.epoch)


@router.post("/invocation_run", response_model=InvocationRunStarted)
def invocation_run(body: InvocationRef, store: StoreDep) -> InvocationRunStarted:
    """Start a queued or failed invocation, or re-fire a finished one, as a Prefect flow run.

    The new run is opened here (atomically; a running invocation is refused with 409), so the
    answer comes at once with its id; the flow carries it out in the background, then rebuilds
    the test's AggregatedResults. Earlier runs and their traces are kept.
    """
    from flows.single_invocation import run_invocation_flow
    from glow import cancel
    from glow.api.background import start_flow
    from glow.context import fresh_context

    inv = store.get_invocation(body.invocation_id, runs=False)
    fresh_context(inv.test_id, store)  # a test whose files vanished fails here, not later
    run = store.start_run(
        inv.invocation_id, allowed=RERUNNABLE, owner=cancel.OWNER, lease_s=cancel.LEASE_S
    )

    def give_up(exc: BaseException) -> None:
        _fail_open_run(store, inv.invocation_id, f"the flow run crashed: {exc}")

    try:
        flow_run_id = start_flow(
            run_invocation_flow,
            {"invocation_id": inv.invocation_id, "run_id": run.run_id},
            on_crash=give_up,
        )
    except Exception as exc:  # noqa: BLE001 - Prefect unreachable: nothing will run it
        _fail_open_run(store, inv.invocation_id, f"could not create a Prefect flow run: {exc}")
        raise ApiError(503, f"could not start a Prefect flow run: {exc}") from None
    return InvocationRunStarted(
        invocation_id=inv.invocation_id,
        run_id=run.run_id,
        run_number=run.number,
        status=Status.running,
        flow_run_id=flow_run_id,
    )


def _fail_open_run(store: Store, invocation_id: str, message: str) -> None:
    """A run that will never be carried out ends failed, so it can be run again."""
    try:
        store.transition(
            invocation_id,
            Status.failed,
            allowed=frozenset({Status.running}),
            values={"error_type": "FlowRunError", "error_message": message[:2000]},
        )
    except Exception:  # noqa: BLE001 - it moved on meanwhile (terminated, completed)
        pass


@router.post("/invocation_terminate", response_model=Invocation)
def invocation_terminate(body: InvocationTerminateRequest, store: StoreDep) -> Invocation:
    """Terminate a running invocation (its call is abandoned, partial trace kept) or a queued one.

    The store changes first, so the status is terminated at once; a cell running in this
    process is cancelled now, one running in another process within its watcher's poll (0.5 s).
    A late model result is discarded; sibling invocations go on.
    """
    from glow import cancel

    inv = store.transition(
        body.invocation_id,
        Status.terminated,
        allowed=TERMINABLE,
        values={
            "error_type": "Terminated",
            "error_message": body.reason or "terminated through invocation_terminate",
        },
    )
    if not cancel.terminate_local(inv.invocation_id):
        # Not running here (queued, or another process owns it): refresh the results now; a
        # flow that carries the cell rebuilds them again when it ends.
        _rebuild(store, inv.test_id)
    return store.get_invocation(inv.invocation_id, runs=True, trace=False)


def _utf8(text: str | None, field: str) -> None:
    """Refuse text the store cannot encode (a lone surrogate), before anything is written."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(
            422,
            f"{field}: not valid Unicode text (a lone surrogate {text[err.start]!r} at position "
            f"{err.start}); send the text as valid UTF-8",
        ) from None


MANUAL = "supplied manually through invocation_complete"


@router.post("/invocation_complete", response_model=Invocation)
def invocation_complete(body: InvocationCompleteRequest, store: StoreDep) -> Invocation:
    """Mark an invocation completed, optionally with an output and/or scores supplied by hand.

    The output (supplied, else the recorded one) is graded by the test's rubric through the
    rubric's own grading: a supplied score takes the place of its standard's kind, the other
    applicable standards are graded as usual, and the overall score is the rubric's weighted
    mean over the standards that apply to the scenario's category. A supplied score for a
    standard that is unknown or does not apply is a 422, as is an applicable `llm_judge`
    standard left out (no judge is called here: supply its score, or use invocation_run).

    Recorded as a run of its own whose trace says what was supplied; the run, the invocation
    and the score rows are written in one transaction (nothing is written if anything is
    refused). A run still in flight is abandoned and its result discarded; the test's
    AggregatedResults are rebuilt.
    """
    from glow import cancel
    from glow.context import context_for
    from rubrics import GradingContext, GradingUnavailable, NotApplicable, grade

    _utf8(body.output, "output")
    inv = store.get_invocation(body.invocation_id, runs=False)
    if inv.status not in COMPLETABLE:  # checked again in the write; this one answers first
        raise TransitionError(
            f"invocation {inv.invocation_id} is {inv.status.value}; it can be completed only "
            f"when {' or '.join(sorted(s.value for s in COMPLETABLE))}"
        )
    rubric = store.get_test(inv.test_id).rubric
    scenario = context_for(inv.test_id, store).scenarios[inv.scenario_id]
    output = body.output if body.output is not None else inv.output
    try:
        graded = grade(
            rubric,
            GradingContext(scenario=scenario, output=output),
            body.scores or {},
            supplied_rationale=MANUAL,
        )
    except NotApplicable as err:
        raise ApiError(422, str(err)) from None
    except GradingUnavailable as err:
        raise ApiError(
            422,
            f"scores.{err.standard}: standard {err.standard!r} of rubric {rubric.label} needs a "
            "judge call to be graded; supply its score, or run the invocation with "
            "invocation_run to have the test's judge grade it",
        ) from None
    now = utcnow()
    run = Run(
        invocation_id=inv.invocation_id,
        status=Status.completed,
        started_at=now,
        finished_at=now,
        output=body.output,
        trace=[
            TraceEvent(
                kind="note",
                name="invocation_complete",
                content={"supplied": MANUAL, "output": body.output, "scores": body.scores},
            )
        ],
    )
    values: dict[str, Any] = {
        "status": Status.completed,
        "finished_at": now,
        "error_type": None,
        "error_message": None,
        "scores": graded.scores,
        "score": graded.score,
        "passed": graded.passed,
        "rubric": rubric.label,
    }
    if body.output is not None:
        values["output"] = body.output
    rows = graded.standard_scores(
        invocation_id=inv.invocation_id, run_id=run.run_id, grading_id=str(uuid.uuid4())
    )
    store.complete_run(run, allowed=COMPLETABLE, invocation=values, scores=rows)
    cancel.terminate_local(inv.invocation_id)  # an older run of it in flight here: abandon it
    _rebuild(store, inv.test_id)
    return store.get_invocation(inv.invocation_id, runs=True, trace=False)


def _rebuild(store: Store, test_id: str) -> None:
    from glow.results.build import rebuild_results

    rebuild_results(store, test_id)


# --------------------------------------------------------------------------- drafts


@router.post("/invocation_draft", response_model=Draft)
def invocation_draft(body: DraftEdit, store: StoreDep) -> Draft:  # type: ignore[valid-type]
    """Create a draft (no draft_id; test_id needed) or edit the fields given of an existing one.

    A draft never runs: `invocation_create` with its draft_id turns it into a queued invocation.
    """
    fields = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    fields = {
        k: v
        for k, v in fields.items()
        if v is not None or k in ("scenario", "model", "agent", "scenario_id")
    }
    draft_id = fields.pop("draft_id", None)
    if draft_id is not None:
        current = store.get_draft(draft_id)
        if fields.get("test_id", current.test_id) != current.test_id:
            raise ApiError(422, "test_id: a draft cannot move to another test")
        # Only the fields given are written: a concurrent edit of other fields is kept.
        return store.edit_draft(draft_id, **fields)
    else:
        if not fields.get("test_id"):
            raise ApiError(422, "test_id: needed to create a draft (or give draft_id to edit)")
        store.get_test(fields["test_id"])
        draft = Draft.model_validate(fields)
    return store.save_draft(draft)


@router.post("/invocation_drafts", response_model=DraftList)
def invocation_drafts(body: TestRef, store: StoreDep) -> DraftList:
    """A test's drafts, oldest first."""
    store.get_test(body.test_id)
    return DraftList(drafts=store.list_drafts(body.test_id))
