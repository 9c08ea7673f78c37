"""The test-level ops around invocations: create, get, list, run, results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body

from glow.api.deps import ERRORS, StoreDep
from glow.api.errors import ApiError
from glow.api.guard import JsonRoute
from glow.api.schemas import (
    ResultsRequest,
    ResultsResponse,
    TestCreateRequest,
    TestInfo,
    TestList,
    TestListRequest,
    TestPath,
    TestRef,
    TestRunStarted,
)
from glow.errors import SpecError
from glow.models import slugify

router = APIRouter(prefix="/test", tags=["tests"], responses=ERRORS, route_class=JsonRoute)


@router.post("/create", response_model=TestInfo)
def create(
    body: Annotated[
        TestCreateRequest,
        Body(
            description='A test spec (the YAML\'s fields as JSON), or {"path": ...} of a '
            "test YAML on the server."
        ),
    ],
    store: StoreDep,
) -> TestInfo:
    """Create a test and its queued invocations (one per cell); nothing runs yet."""
    from glow.planning import create_or_resume
    from glow.spec import load_test, preflight, resolve_test

    try:
        loaded = load_test(body.path) if isinstance(body, TestPath) else resolve_test(body)
        preflight(loaded)
    except (OSError, ValueError) as exc:  # an unreadable path, a NUL byte in a name...
        raise SpecError(f"cannot load the test: {exc}") from None
    record, _ = create_or_resume(store, loaded)
    return TestInfo(test=record, counts=store.count_invocations(record.test_id))


@router.post("/get", response_model=TestInfo)
def get(body: TestRef, store: StoreDep) -> TestInfo:
    """A test as stored (spec, rubric, status, flow run) and its invocations per status."""
    return TestInfo(test=store.get_test(body.test_id), counts=store.count_invocations(body.test_id))


@router.post("/list", response_model=TestList)
def list_tests(
    store: StoreDep,
    body: Annotated[TestListRequest | None, Body()] = None,
) -> TestList:
    """Tests, newest first."""
    return TestList(tests=store.list_tests(limit=(body or TestListRequest()).limit))


@router.post("/run", response_model=TestRunStarted)
def run(body: TestRef, store: StoreDep) -> TestRunStarted:
    """Start the run-test flow for a test in the background; answers at once.

    It runs every cell not completed yet (a resume), then rebuilds AggregatedResults.
    """
    from flows.run_test import run_test
    from glow.api.background import start_flow

    before = store.get_test(body.test_id).status
    # One conditional write claims the test: a second caller gets 409 naming the flow run.
    record = store.begin_test_run(body.test_id)
    params: dict[str, Any] = {"test_id": record.test_id, "resume": True}
    if record.spec_path and _file_matches(record.spec_path, record.spec):
        params["path"] = record.spec_path
    else:
        params["test"] = record.spec

    def crashed(exc: BaseException) -> None:
        store.end_test_run(record.test_id, "created")

    try:
        flow_run_id = start_flow(
            run_test, params, name=slugify(f"test-{record.name}"), on_crash=crashed
        )
    except Exception as exc:  # noqa: BLE001 - Prefect unreachable
        store.end_test_run(record.test_id, before if before != "running" else "created")
        raise ApiError(503, f"could not start a Prefect flow run: {exc}") from None
    return TestRunStarted(test_id=record.test_id, flow_run_id=flow_run_id)


def _file_matches(path: str, spec: Any) -> bool:
    """Run from the YAML only if it still says what the store holds (drafts may add cells)."""
    from glow.spec import load_test

    try:
        return bool(load_test(path).spec == spec)
    except Exception:  # noqa: BLE001 - moved, edited or broken: run the stored spec
        return False


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@router.post("/results", response_model=ResultsResponse)
def results(body: ResultsRequest, store: StoreDep) -> ResultsResponse:
    """A test's AggregatedResults rows from its parquet file (built first if missing)."""
    import pyarrow.parquet as pq

    from glow.results.build import rebuild_results, results_dir

    store.get_test(body.test_id)
    folder = results_dir(body.test_id)
    if body.rebuild or not (folder / "aggregated.parquet").is_file():
        rebuild_results(store, body.test_id)
    rows = pq.read_table(folder / "aggregated.parquet").to_pylist()
    paths = {p.stem: str(p) for p in sorted(Path(folder).glob("*.parquet"))}
    return ResultsResponse(test_id=body.test_id, rows=_json_safe(rows), paths=paths)
