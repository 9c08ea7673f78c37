"""The API's list pages: `Store.list_invocations_json` renders on SQLite what pydantic would,
and `POST /test/invocations` answers through its ASGI fast path exactly as the route does.

The fast path writes each row's JSON in SQL (and Python for floats and timestamps) instead of
validating and dumping models; these tests hold it to the pydantic path, value for value and
key for key, on awkward values, and check that rows it cannot render exactly fall back. The
HTTP tests run the app in-process (no Prefect): every error must still be the route's. The
last one holds a schema fix the OpenAPI fuzz test found in `invocation_create`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from glow.api import create_app
from glow.api.invocations import InvocationPages
from glow.models import Invocation, Modality, ModelSpec, Rubric, Status, TestRecord, TestSpec
from glow.store import Store
from glow.store import tables as t


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'glow.db'}")


def _test_id(store: Store) -> str:
    spec = TestSpec(
        name="pages", scenarios=[], models=[ModelSpec(name="m", model="openai/x")], rubric="r"
    )
    rubric = Rubric(name="r", standards=[{"name": "s", "kind": "exact"}])
    record = TestRecord(test_id=str(uuid.uuid4()), name="pages", spec=spec, rubric=rubric)
    store.create_test(record)
    return record.test_id


AWKWARD_TEXT = [
    'quote " backslash \\ slash /',
    "newline\n tab\t cr\r bell\x07 nul-free \x1f",
    "unicode é ß 漢字 🙂 \u2028 \u2029",
    "",
    "%s %d %% printf-looking",
    "'single' -- ; DROP TABLE",
]
AWKWARD_FLOATS = [0.1 + 0.2, 1e-06, 1e20, 1e16, 123456789.123, -0.0, 5e-324, 0.23500000000000001]


def _invocations(test_id: str) -> list[Invocation]:
    invs = []
    for i in range(24):
        text = AWKWARD_TEXT[i % len(AWKWARD_TEXT)]
        number = AWKWARD_FLOATS[i % len(AWKWARD_FLOATS)]
        micro = [0, 1, 200000, 999999][i % 4]
        stamp = datetime(2026, 1, 1 + i % 28, i % 24, i % 60, i % 60, micro, tzinfo=UTC)
        invs.append(
            Invocation(
                invocation_id=f"inv-{i:03d}-{uuid.uuid4()}",
                test_id=test_id,
                scenario_id=f"s{i} {text}"[:60],
                category=text or "uncategorised",
                model=["m", "n"][i % 2],
                agent="direct",
                provider="openai",
                epoch=1 + i * 1_000_000_007,
                modalities=[Modality.text, Modality.image][: 1 + i % 2],
                status=list(Status)[i % len(Status)],
                attempts=i,
                output=None if i % 3 == 0 else text,
                scores={} if i % 5 == 0 else {"exact": number, 'ünïcode "key"': 1.0 / 3},
                score=None if i % 4 == 0 else number,
                passed=[None, True, False][i % 3],
                rubric=None if i % 2 else "r@1",
                input_tokens=i * 7,
                output_tokens=2**40 + i,
                model_cost_usd=None if i % 6 == 0 else number / 7,
                judge_cost_usd=0.0,
                cost_usd=number * 3,
                latency_s=None if i % 2 else 0.2 + 0.035 * i,
                error_type=None if i % 2 else "Err",
                error_message=None if i % 2 else text,
                created_at=stamp,
                started_at=None if i % 3 == 0 else stamp,
                finished_at=stamp.replace(microsecond=(micro + 1) % 1_000_000),
            )
        )
    return invs


def _reference(store: Store, test_id: str, **kwargs: object) -> list[tuple[str, str]]:
    """What the API wrote per row before: pydantic's model_dump, rendered like JSONResponse."""
    return [
        (
            inv.invocation_id,
            json.dumps(inv.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")),
        )
        for inv in store.list_invocations(test_id, **kwargs)  # type: ignore[arg-type]
    ]


def _same(fast: list[tuple[str, str]], reference: list[tuple[str, str]]) -> None:
    assert [i for i, _ in fast] == [i for i, _ in reference]
    for (_, text), (_, ref) in zip(fast, reference, strict=True):
        got, want = json.loads(text), json.loads(ref)
        assert got == want
        assert list(got) == list(want)  # the same key order
        for key in ("score", "cost_usd", "model_cost_usd"):  # floats to the last bit
            assert repr(got[key]) == repr(want[key])


def test_invocation_pages_render_what_pydantic_renders(store: Store) -> None:
    test_id = _test_id(store)
    store.ensure_invocations(_invocations(test_id))
    assert store._json_page_sqlite(test_id, None, None, None, None) is not None  # the fast path
    _same(store.list_invocations_json(test_id), _reference(store, test_id))
    # A plain ASCII row is byte for byte what the pydantic path writes.
    first = store.list_invocations_json(test_id, limit=1)
    assert first == _reference(store, test_id, limit=1)


@pytest.mark.parametrize(
    "filters",
    [
        {"status": Status.completed},
        {"status": "queued"},
        {"model": "n"},
        {"model": "n", "status": Status.failed, "limit": 2},
        {"limit": 5},
        {"after": "inv-010", "limit": 7},
        {"model": "absent"},
    ],
)
def test_invocation_page_filters_match_list_invocations(store: Store, filters: dict) -> None:
    test_id = _test_id(store)
    store.ensure_invocations(_invocations(test_id))
    _same(store.list_invocations_json(test_id, **filters), _reference(store, test_id, **filters))


def test_invocation_rows_the_fast_path_cannot_render_fall_back(store: Store) -> None:
    test_id = _test_id(store)
    invs = _invocations(test_id)[:6]
    store.ensure_invocations(invs)
    with store.engine.begin() as conn:
        # A timestamp written without SQLAlchemy's fraction: SQLAlchemy still parses it.
        conn.execute(
            update(t.invocations)
            .where(t.invocations.c.invocation_id == invs[2].invocation_id)
            .values(started_at=None)
        )
        conn.exec_driver_sql(
            "UPDATE invocations SET created_at = '2026-03-04 05:06:07' WHERE invocation_id = ?",
            (invs[3].invocation_id,),
        )
    assert store._json_page_sqlite(test_id, None, None, None, None) is None
    _same(store.list_invocations_json(test_id), _reference(store, test_id))
    page = dict(store.list_invocations_json(test_id))
    assert json.loads(page[invs[3].invocation_id])["created_at"] == "2026-03-04T05:06:07Z"


def test_invocation_page_with_nan_fails_as_before(store: Store) -> None:
    """NaN is not JSON: the API refused to render it before, and still does (no silent null)."""
    test_id = _test_id(store)
    inv = _invocations(test_id)[1].model_copy(update={"scores": {"exact": float("nan")}})
    store.ensure_invocations([inv])
    assert store._json_page_sqlite(test_id, None, None, None, None) is None
    with pytest.raises(ValueError, match="JSON compliant"):
        store.list_invocations_json(test_id)


def test_empty_invocation_page(store: Store) -> None:
    assert store.list_invocations_json(_test_id(store)) == []


TOKEN = "pages-token"


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    app = create_app(TOKEN, store, prefect=False)
    with TestClient(app, base_url="http://127.0.0.1:8484") as client:  # a loopback Host
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    return str(response.json()["error"]["message"])


def test_invocations_pages_over_http_every_row_once(client: TestClient, store: Store) -> None:
    test_id = _test_id(store)
    invs = _invocations(test_id)
    store.ensure_invocations(invs)
    body = json.dumps({"test_id": test_id, "page_size": 5}).encode()
    assert InvocationPages._page({"app": client.app}, body) is not None  # the fast path
    seen: list[dict[str, Any]] = []
    request: dict[str, Any] = {"test_id": test_id, "page_size": 5}
    while True:
        response = client.post("/test/invocations", json=request)
        assert response.status_code == 200 and response.headers["content-type"] == (
            "application/json"
        )
        page = response.json()
        seen += page["invocations"]
        if "next_page_token" not in page:
            break
        assert len(page["invocations"]) == 5
        request["page_token"] = page["next_page_token"]
    want = [json.loads(text) for _, text in _reference(store, test_id)]
    assert seen == want and len(seen) == len(invs)
    empty = client.post("/test/invocations", json={"test_id": _test_id(store)})
    assert empty.status_code == 200 and empty.json() == {"invocations": []}


def test_invocations_errors_are_the_routes(client: TestClient, store: Store) -> None:
    test_id = _test_id(store)
    store.ensure_invocations(_invocations(test_id)[:3])
    post = client.post
    bad_json = post("/test/invocations", content=b"{not json")
    _error(bad_json, 400, "bad_request")
    assert "page_size" in _error(
        post("/test/invocations", json={"test_id": test_id, "page_size": 0}),
        422,
        "validation_error",
    )
    assert "nope" in _error(
        post("/test/invocations", json={"test_id": test_id, "nope": 1}), 422, "validation_error"
    )
    _error(post("/test/invocations", json={}), 422, "validation_error")
    _error(post("/test/invocations", json={"test_id": "no-such-test"}), 404, "not_found")
    garbage = {"test_id": test_id, "page_token": "garbage!"}
    assert "page_token" in _error(post("/test/invocations", json=garbage), 422, "validation_error")
    garbage["test_id"] = "no-such-test"  # an unknown test is a 404 before a bad token is a 422
    _error(post("/test/invocations", json=garbage), 404, "not_found")
    _error(
        post("/test/invocations", json={"test_id": test_id}, headers={"Authorization": ""}),
        401,
        "unauthorized",
    )
    _error(client.get("/test/invocations"), 405, "method_not_allowed")
    filtered = post("/test/invocations", json={"test_id": test_id, "status": "queued"})
    assert [r["status"] for r in filtered.json()["invocations"]] == ["queued"]
    # A lone surrogate is not text: a 422 naming the field, whether or not the test exists.
    surrogate = b'{"test_id": "%s", "model": "\\udfff"}' % test_id.encode()
    assert "model" in _error(post("/test/invocations", content=surrogate), 422, "validation_error")
    surrogate = b'{"test_id": "no-such-test", "model": "\\udfff"}'
    assert "model" in _error(post("/test/invocations", content=surrogate), 422, "validation_error")


def test_invocation_create_with_empty_cell_fields_is_a_422(
    client: TestClient, store: Store
) -> None:
    """Found by the OpenAPI fuzz test: "" passed the schema's None check and crashed the op."""
    test_id = _test_id(store)
    body = {"test_id": test_id, "scenario_id": "s0", "model": ""}
    assert "model" in _error(
        client.post("/test/invocation_create", json=body), 422, "validation_error"
    )


class SlowStore(Store):
    """A store whose page read takes 2 s: a stand-in for a read waiting on a busy database
    (the slowness is the only thing simulated; the store, app and server are real)."""

    def list_invocations_json(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        time.sleep(2.0)
        return super().list_invocations_json(*args, **kwargs)


def test_the_event_loop_stays_free_during_a_slow_store_call(tmp_path: Path) -> None:
    """A page read that takes 2 s runs on a store thread: /health (and the loop) answer at once."""
    import uvicorn

    store = SlowStore(f"sqlite:///{tmp_path / 'glow.db'}")
    test_id = _test_id(store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(TOKEN, store, prefect=False), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        results: dict[str, Any] = {}

        def page() -> None:
            results["page"] = httpx.post(
                f"{url}/test/invocations",
                json={"test_id": test_id},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )

        reader = threading.Thread(target=page)
        reader.start()
        time.sleep(0.5)  # the page is inside its 2 s store call now
        started = time.monotonic()
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        waited = time.monotonic() - started
        reader.join(30)
        assert waited < 0.5, f"/health waited {waited:.2f} s behind a store call"
        assert results["page"].status_code == 200 and results["page"].json() == {"invocations": []}
    finally:
        server.should_exit = True
        thread.join(10)
