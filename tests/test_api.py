"""The HTTP API against a real `glow serve` (uvicorn on 127.0.0.1, SQLite store, the session's
Prefect server, the simulator over HTTP): auth, error shapes, the invocation lifecycle through
Prefect flow runs, terminate on a hung call, pagination under change, drafts, the seed's curl
examples as written, and a schemathesis pass over the OpenAPI document."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import api_harness
import httpx
import pytest
from api_harness import TOKEN, Api

pytestmark = pytest.mark.usefixtures("prefect_server")
api = api_harness.api  # the module-scoped `glow serve` fixture

OPS = [
    "invocation_get",
    "invocation_create",
    "invocation_run",
    "invocation_complete",
    "invocation_terminate",
    "invocation_trace",
    "invocation_draft",
    "invocations",
    "invocation_drafts",
    "create",
    "get",
    "run",
    "list",
    "results",
]


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def _flow_run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _wait_flow(flow_run_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = _flow_run(flow_run_id)
        if (run.state and run.state.is_final()) or time.monotonic() > deadline:
            return run
        time.sleep(0.3)


def test_auth_and_error_shapes(api: Api) -> None:
    test_id, rows = api.create_test("errors")
    inv_id = rows[0]["invocation_id"]

    for token in (None, "wrong-token"):
        message = _error(
            api.post("invocation_get", {"invocation_id": inv_id}, token=token), 401, "unauthorized"
        )
        assert inv_id not in message
    bad_json = httpx.post(
        f"{api.url}/test/invocation_get",
        content=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    _error(bad_json, 400, "bad_request")
    assert "invocation_id" in _error(api.post("invocation_get", {}), 422, "validation_error")
    assert "page_size" in _error(
        api.post("invocations", {"test_id": test_id, "page_size": 0}), 422, "validation_error"
    )
    assert "nope" in _error(
        api.post("invocation_get", {"invocation_id": inv_id, "nope": 1}), 422, "validation_error"
    )
    _error(api.post("invocation_get", {"invocation_id": "no-such-id"}), 404, "not_found")
    _error(api.post("invocations", {"test_id": "no-such-test"}), 404, "not_found")
    _error(
        api.post("invocations", {"test_id": test_id, "page_token": "garbage!"}),
        422,
        "validation_error",
    )

    # Lifecycle refusals name the current status.
    api.ok("invocation_terminate", {"invocation_id": inv_id})
    for op in ("invocation_terminate", "invocation_complete"):
        assert "terminated" in _error(api.post(op, {"invocation_id": inv_id}), 409, "conflict")
    # The OpenAPI document lists every op with its request and response schema.
    doc = httpx.get(f"{api.url}/openapi.json").json()
    for op in OPS:
        post = doc["paths"][f"/test/{op}"]["post"]
        assert "requestBody" in post and "200" in post["responses"], op


def test_run_refire_complete_trace_through_prefect(api: Api) -> None:
    test_id, rows = api.create_test("lifecycle")
    strong = [r for r in rows if r["model"] == "strong"]
    first = strong[0]["invocation_id"]

    started = api.ok("invocation_run", {"invocation_id": first})
    assert started["status"] == "running" and started["run_number"] == 1
    inv = api.wait_status(first, {"completed", "failed"})
    assert inv["status"] == "completed" and inv["scores"] and inv["runs"][0]["trace"]
    flow_run = _wait_flow(started["flow_run_id"])
    assert flow_run.state.is_completed() and flow_run.flow_id

    # Re-fire: a new run with its own trace; the first run is kept.
    again = api.ok("invocation_run", {"invocation_id": first})
    assert again["run_number"] == 2 and again["run_id"] != started["run_id"]
    inv = api.wait_status(first, {"completed", "failed"})
    assert [r["number"] for r in inv["runs"]] == [1, 2]
    assert inv["runs"][0]["run_id"] == started["run_id"] and inv["runs"][0]["trace"]
    slim = api.ok("invocation_get", {"invocation_id": first, "include_trace": False})
    assert all(r["trace"] == [] for r in slim["runs"])

    # The trace entry: deterministic, bound to the config and a run (latest by default).
    body = {"test_id": test_id, "test_invocation_id": first}
    entry = api.ok("invocation_trace", body)
    assert entry == api.ok("invocation_trace", body)
    assert entry["run_id"] == again["run_id"] and entry["config"]["model"]["name"] == "strong"
    assert entry["config"]["rubric"]["name"] == "exact_answer" and len(entry["config_hash"]) == 64
    older = api.ok("invocation_trace", {**body, "run_id": started["run_id"]})
    assert older["test_invocation_trace_id"] != entry["test_invocation_trace_id"]
    assert older["run"]["run_id"] == started["run_id"]
    assert api.ok("invocation_trace", {"invocation_id": first}) == entry

    # A running invocation cannot be run again.
    slow = next(r for r in rows if r["model"] == "slow")["invocation_id"]
    api.ok("invocation_run", {"invocation_id": slow})
    assert "running" in _error(api.post("invocation_run", {"invocation_id": slow}), 409, "conflict")
    # Complete it by hand with a score: recorded as such; the hung call is abandoned.
    done = api.ok(
        "invocation_complete", {"invocation_id": slow, "output": "42", "scores": {"exact": 1.0}}
    )
    assert done["status"] == "completed" and done["score"] == 1.0 and done["passed"] is True
    full = api.ok("invocation_get", {"invocation_id": slow})
    note = full["runs"][-1]["trace"][-1]
    assert note["kind"] == "note" and "manually" in note["content"]["supplied"]
    assert "completed" in _error(
        api.post("invocation_complete", {"invocation_id": slow}), 409, "conflict"
    )
    assert _error(
        api.post(
            "invocation_complete",
            {"invocation_id": strong[1]["invocation_id"], "scores": {"nope": 0.5}},
        ),
        422,
        "validation_error",
    ).startswith("scores.nope")

    results = api.ok("results", {"test_id": test_id})
    overall = {r["model"]: r for r in results["rows"] if r["category"] == "*"}
    assert overall["strong"]["n_completed"] == 1 and overall["slow"]["n_completed"] == 1
    assert set(results["paths"]) >= {"aggregated", "invocations", "generations"}


def test_terminate_a_hung_call(api: Api) -> None:
    test_id, rows = api.create_test("terminate")
    slow = [r["invocation_id"] for r in rows if r["model"] == "slow"]
    strong = [r["invocation_id"] for r in rows if r["model"] == "strong"]
    before = api.sim_requests("sim-slow")

    hung = api.ok("invocation_run", {"invocation_id": slow[0]})
    deadline = time.monotonic() + 10
    while api.sim_requests("sim-slow") < before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    waiting = api.ok("invocation_run", {"invocation_id": slow[1]})  # max_in_flight 1: waits
    sibling = api.ok("invocation_run", {"invocation_id": strong[0]})
    time.sleep(1.0)
    assert api.sim_requests("sim-slow") == before + 1  # the second waits for the slot

    started = time.monotonic()
    api.ok("invocation_terminate", {"invocation_id": slow[0]})
    inv = api.wait_status(slow[0], {"terminated"}, timeout=5)
    assert inv["status"] == "terminated"
    while time.monotonic() - started < 5:  # the abandoned call's event lands in the trace
        inv = api.ok("invocation_get", {"invocation_id": slow[0]})
        if inv["runs"][-1]["trace"]:
            break
        time.sleep(0.1)
    assert time.monotonic() - started < 5
    run = inv["runs"][-1]
    assert run["status"] == "terminated" and run["run_id"] == hung["run_id"]
    assert any(e["error_type"] == "Terminated" for e in run["trace"])
    # Its slot is freed: the waiting call of the same model reaches the model now.
    while api.sim_requests("sim-slow") < before + 2 and time.monotonic() - started < 5:
        time.sleep(0.1)
    assert api.sim_requests("sim-slow") == before + 2
    # The sibling completes; the hung one's flow run reads Cancelled in Prefect.
    assert api.wait_status(strong[0], {"completed", "failed"})["status"] == "completed"
    assert _wait_flow(sibling["flow_run_id"]).state.is_completed()
    assert _wait_flow(hung["flow_run_id"]).state.is_cancelled()
    assert api.ok("invocation_get", {"invocation_id": slow[0]})["status"] == "terminated"

    api.ok("invocation_terminate", {"invocation_id": slow[1]})
    assert _wait_flow(waiting["flow_run_id"]).state.is_cancelled()
    # A queued invocation is terminated without running.
    queued = strong[1]
    done = api.ok("invocation_terminate", {"invocation_id": queued})
    assert done["status"] == "terminated" and done["attempts"] == 0 and done["runs"] == []


def test_pagination_returns_every_row_once_while_statuses_change(api: Api) -> None:
    test_id, rows = api.create_test("paging", scenarios=20)  # 40 invocations
    assert len(rows) == 40
    seen: list[str] = []
    body: dict[str, Any] = {"test_id": test_id, "page_size": 7}
    pages = 0
    while True:
        page = api.ok("invocations", body)
        pages += 1
        seen += [r["invocation_id"] for r in page["invocations"]]
        # Change statuses under the cursor: behind it, ahead of it.
        for inv_id in (rows[pages * 3]["invocation_id"], rows[-pages]["invocation_id"]):
            api.post("invocation_terminate", {"invocation_id": inv_id})
        if "next_page_token" not in page:
            break
        body["page_token"] = page["next_page_token"]
    assert pages == 6 and sorted(seen) == sorted(r["invocation_id"] for r in rows)
    assert len(seen) == len(set(seen))
    terminated = api.ok(
        "invocations", {"test_id": test_id, "status": "terminated", "page_size": 500}
    )
    assert terminated["invocations"] and "next_page_token" not in terminated
    assert all(r["status"] == "terminated" for r in terminated["invocations"])
    # The largest page_size a request may ask for (1..1000; a page holds at most 500 rows).
    slow = api.ok("invocations", {"test_id": test_id, "model": "slow", "page_size": 1000})
    assert len(slow["invocations"]) == 20 and {r["model"] for r in slow["invocations"]} == {"slow"}


def test_drafts_never_run_until_created(api: Api) -> None:
    test_id, _ = api.create_test("drafts")
    draft = api.ok(
        "invocation_draft",
        {
            "test_id": test_id,
            "scenario": {"id": "new-q", "input": "What is 20 + 22?", "reference": "42"},
            "model": "strong",
            "params": {"temperature": 0},
        },
    )
    edited = api.ok("invocation_draft", {"draft_id": draft["draft_id"], "epoch": 2})
    assert edited["epoch"] == 2 and edited["scenario"]["id"] == "new-q"
    assert [d["draft_id"] for d in api.ok("invocation_drafts", {"test_id": test_id})["drafts"]] == [
        draft["draft_id"]
    ]
    before = {
        r["invocation_id"] for r in api.ok("invocations", {"test_id": test_id})["invocations"]
    }

    inv = api.ok("invocation_create", {"draft_id": draft["draft_id"]})
    assert inv["status"] == "queued" and inv["scenario_id"] == "new-q" and inv["epoch"] == 2
    assert inv["invocation_id"] not in before and inv["model"].startswith("strong-")
    assert api.ok("invocation_drafts", {"test_id": test_id})["drafts"] == []
    spec = api.ok("get", {"test_id": test_id})["test"]["spec"]
    added = next(m for m in spec["models"] if m["name"] == inv["model"])
    assert added["params"] == {"temperature": 0}
    assert any(s["id"] == "new-q" for s in spec["scenarios"])

    api.ok("invocation_run", {"invocation_id": inv["invocation_id"]})
    assert api.wait_status(inv["invocation_id"], {"completed", "failed"})["status"] == "completed"
    # A cell by name; the same cell twice is refused naming its status.
    cell = {"test_id": test_id, "scenario_id": "q000", "model": "strong", "epoch": 3}
    assert api.ok("invocation_create", cell)["status"] == "queued"
    assert "queued" in _error(api.post("invocation_create", cell), 409, "conflict")
    _error(api.post("invocation_create", {**cell, "scenario_id": "nope"}), 404, "not_found")
    assert "model" in _error(
        api.post("invocation_create", {**cell, "model": "x"}), 422, "validation_error"
    )


def test_seed_curl_examples_as_written(api: Api) -> None:
    test_id, rows = api.create_test("seed-curl")
    inv_id = next(r["invocation_id"] for r in rows if r["model"] == "strong")
    api.ok("invocation_run", {"invocation_id": inv_id})
    api.wait_status(inv_id, {"completed", "failed"})
    examples = [
        f"""curl -X POST $GLOW_INSTANCE_URL/test/invocation_get \\
-H "Authorization: Bearer $GLOW_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{{"invocation_id": "{inv_id}"}}'""",
        f"""curl -X POST $GLOW_INSTANCE_URL/test/invocations \\
-H "Authorization: Bearer $GLOW_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{{"test_id": "{test_id}", "page_size": 25}}'""",
        f"""curl -X POST $GLOW_INSTANCE_URL/test/invocation_trace \\
-H "Authorization: Bearer $GLOW_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{{"test_id": "{test_id}", "test_invocation_id": "{inv_id}"}}'""",
    ]
    outputs = []
    for example in examples:
        done = subprocess.run(
            ["bash", "-c", example + " -s -w '\\n%{http_code}'"],
            env=api.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        body, _, status = done.stdout.rpartition("\n")
        assert status == "200", (example, done.stdout, done.stderr)
        outputs.append(json.loads(body))
    assert outputs[0]["invocation_id"] == inv_id and outputs[0]["runs"]
    assert len(outputs[1]["invocations"]) == len(rows) and "next_page_token" not in outputs[1]
    assert outputs[2]["test_invocation_trace_id"] and outputs[2]["run"]["trace"]


def test_test_level_ops(api: Api) -> None:
    from conftest import ROOT

    path = api.home / "t.json"
    spec = api.spec("test-ops", scenarios=2)
    spec["models"] = spec["models"][:1]
    path.write_text(json.dumps(spec))
    yaml_path = api.home / "t.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(spec))
    created = api.ok("create", {"path": str(yaml_path)})
    test_id = created["test"]["test_id"]
    assert created["counts"] == {"queued": 2} and created["test"]["spec_path"]
    assert test_id in [t["test_id"] for t in api.ok("list", {})["tests"]]
    started = api.ok("run", {"test_id": test_id})
    assert started["test_id"] == test_id and started["flow_run_id"]
    flow_run = _wait_flow(started["flow_run_id"], timeout=60)
    assert flow_run.state.is_completed(), flow_run.state
    assert api.ok("get", {"test_id": test_id})["counts"] == {"completed": 2}
    rows = api.ok("results", {"test_id": test_id, "rebuild": True})["rows"]
    assert rows and rows[0]["n_completed"] == 2
    assert "scenarios" in _error(
        api.post("create", {**spec, "scenarios": []}), 422, "validation_error"
    )
    _error(api.post("create", {"path": str(ROOT / "nope.yaml")}), 422, "validation_error")


def _fuzz(operation: Any, calls: dict[str, int], failures: list[str]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(
        max_examples=15,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        calls[operation.path] = calls.get(operation.path, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{operation.path}: {response.status_code} {response.text}")

    check()


def test_openapi_fuzz_finds_no_server_error(api: Api) -> None:
    """schemathesis generates bodies for every op from the OpenAPI document: never a 5xx."""
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    failures: list[str] = []
    calls: dict[str, int] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        _fuzz(result.ok(), calls, failures)
    assert not failures, failures[:5]
    assert set(calls) == {f"/test/{op}" for op in OPS} and min(calls.values()) >= 3, calls
    assert time.monotonic() - started < 90
    for op in ("run", "invocation_run"):
        _error(
            api.post(op, {"test_id": "x"} if op == "run" else {"invocation_id": "x"}),
            404,
            "not_found",
        )
