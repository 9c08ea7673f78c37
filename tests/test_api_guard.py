"""Hostile requests against a real `glow serve` (issue 11, points 5, 6 and 7's API half).

A web page (or DNS rebinding) must not drive the API: foreign Host, cross-site Origin and
non-JSON bodies are refused; `--open` only on loopback. Bad bodies are 4xx naming the field,
never a 500 or half-applied state: size limit while reading, lone surrogates, integer bounds,
epoch and cell caps. The event loop stays free: a slow store call or a catastrophic regex
standard does not hold up /health or other requests. Real uvicorn subprocesses, raw sockets.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import api_harness
import httpx
import pytest
from api_harness import TOKEN, Api, free_port, start_server, wait_healthy
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("prefect_server")
api = api_harness.api  # the module-scoped `glow serve` fixture (token, 127.0.0.1)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def _post(api: Api, op: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.post(f"{api.url}/test/{op}", content=content, headers=auth | headers, timeout=30)


def _port(api: Api) -> int:
    return int(api.url.rsplit(":", 1)[1])


def _test_names(api: Api) -> list[str]:
    return [t["name"] for t in api.ok("list", {"limit": 1000})["tests"]]


# --------------------------------------------------------------------------- Host and Origin


def test_foreign_host_and_cross_site_origin_are_refused_with_a_token(api: Api) -> None:
    body = json.dumps({"limit": 1}).encode()
    json_type = {"Content-Type": "application/json"}
    port = _port(api)
    for host in ("attacker.example", f"attacker.example:{port}", f"10.1.2.3:{port}", ""):
        message = _error(_post(api, "list", body, json_type | {"Host": host}), 403, "forbidden")
        assert "loopback" in message
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null"):
        message = _error(_post(api, "list", body, json_type | {"Origin": origin}), 403, "forbidden")
        assert "Origin" in message
    # DNS rebinding: the page's own origin matches its Host, but the Host is not loopback.
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    _error(_post(api, "list", body, json_type | rebound), 403, "forbidden")
    _error(httpx.get(f"{api.url}/openapi.json", headers={"Host": "evil.example"}), 403, "forbidden")
    # Loopback names, with or without a port, and a same-origin page are served.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        assert _post(api, "list", body, json_type | {"Host": host}).status_code == 200, host
    same = {"Origin": f"http://127.0.0.1:{port}"}
    assert _post(api, "list", body, json_type | same).status_code == 200


@pytest.fixture(scope="module")
def open_api(api: Api) -> Iterator[str]:
    """A second server, `glow serve --open` (no token) on 127.0.0.1, same store."""
    env = {k: v for k, v in api.env.items() if k != "GLOW_TOKEN"}
    env |= {
        "GLOW_DATA_DIR": str(api.home),
        "GLOW_DATABASE_URL": f"sqlite:///{api.home / 'glow.db'}",
        "GLOW_RESULTS_DIR": str(api.home / "results"),
        "GLOW_SIM_API_KEY": "fake",
    }
    port = free_port()
    process = start_server(env, port, "--open")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_web_page_cannot_drive_an_open_server(api: Api, open_api: str) -> None:
    """What a page the operator visits can send without a CORS preflight, all refused."""
    spec = json.dumps(api.spec("from-a-web-page", scenarios=1)).encode()
    port = open_api.rsplit(":", 1)[1]
    page = {"Origin": "http://evil.example"}
    attempts = [
        # fetch(url, {method: "POST", mode: "no-cors", body: JSON.stringify(spec)})
        {"Content-Type": "text/plain;charset=UTF-8", **page},
        {"Content-Type": "application/x-www-form-urlencoded", **page},
        {"Content-Type": "multipart/form-data; boundary=x", **page},
        # the same from a rebound name (same-origin to the browser) or with no Origin at all
        {"Content-Type": "text/plain", "Host": f"evil.example:{port}"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json", **page},
    ]
    for headers in attempts:
        response = httpx.post(f"{open_api}/test/create", content=spec, headers=headers, timeout=30)
        assert response.status_code in (403, 415), (headers, response.text)
    assert "from-a-web-page" not in _test_names(api)
    # The operator's own client (JSON, loopback Host, no Origin) works without a token.
    created = httpx.post(
        f"{open_api}/test/create",
        content=spec,
        headers={"Content-Type": "application/json"},
        timeout=60,  # the first create imports litellm in that server (~6 s)
    )
    assert created.status_code == 200, created.text


def test_open_is_refused_off_loopback_with_exit_2(api: Api) -> None:
    env = {k: v for k, v in api.env.items() if k != "GLOW_TOKEN"}
    for args, extra in (
        (["--open", "--host", "0.0.0.0"], {}),
        (["--open", "--host", "192.0.2.1"], {}),
        (["--open", "--host", "0.0.0.0"], {"GLOW_TOKEN": TOKEN}),  # --open with a token too
    ):
        done = subprocess.run(
            [sys.executable, "-m", "glow.cli", "serve", "--port", str(free_port()), *args],
            env=env | extra,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "--open is allowed only on a loopback host" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- content type


def test_bodies_that_are_not_json_by_content_type_are_415(api: Api) -> None:
    body = json.dumps({"limit": 1}).encode()
    for content_type in (
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ):
        message = _error(
            _post(api, "list", body, {"Content-Type": content_type}), 415, "unsupported_media_type"
        )
        assert content_type in message
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/x+json",
    ):
        assert _post(api, "list", body, {"Content-Type": content_type}).status_code == 200
    # No Content-Type at all (a bare POST from a script) is read as JSON.
    raw = _raw(
        api,
        b"POST /test/list HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body,
    )
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]


# --------------------------------------------------------------------------- body size


def _raw(api: Api, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", _port(api)), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_answer(sock)


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer or not _complete(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def _complete(answer: bytes) -> bool:
    head, _, rest = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":")[1])
    return False


def _head(length: bytes) -> bytes:
    return (
        b"POST /test/create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + length + b"\r\n"
    )


def test_an_oversized_body_is_413_before_it_is_all_sent(api: Api) -> None:
    # 60 MB announced, 64 KiB sent: the answer comes at once, without the rest.
    with socket.create_connection(("127.0.0.1", _port(api)), timeout=10) as sock:
        sock.sendall(_head(b"Content-Length: 60000000\r\n") + b"[" + b" " * 65535)
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"payload_too_large" in answer and b"GLOW_MAX_BODY_BYTES" in answer
    # Chunked, no length announced: refused once 1 MiB has arrived, while the client still
    # has 59 MB to go (it never sends the last chunk).
    with socket.create_connection(("127.0.0.1", _port(api)), timeout=10) as sock:
        sock.sendall(_head(b"Transfer-Encoding: chunked\r\n"))
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent = 0
        answer = b""
        sock.setblocking(False)
        started = time.monotonic()
        while sent < 60_000_000 and time.monotonic() - started < 20:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                sock.sendall(chunk)
                sent += 65536
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
        sock.setblocking(True)
        sock.settimeout(10)
        answer += _read_answer(sock) if not _complete(answer) else b""
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < 8 * 1024 * 1024, f"the server read {sent} bytes before refusing"
    # Below the limit, a body is served as before.
    assert api.ok("list", {"limit": 1})["tests"] is not None


# --------------------------------------------------------------------------- bad bodies


def _json_with_surrogate(template: str) -> bytes:
    """`template` with SURR replaced by the JSON escape of a lone surrogate."""
    return template.replace("SURR", "\\ud800").encode()


def test_lone_surrogates_are_a_422_naming_the_field(api: Api) -> None:
    test_id, rows = api.create_test("surrogates", scenarios=1)
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("invocation_get", '{"invocation_id": "xSURR"}', "invocation_id"),
        ("get", '{"test_id": "SURR"}', "test_id"),
        ("invocations", json.dumps({"test_id": test_id, "model": "SURR"}), "model"),
        ("invocation_draft", '{"draft_id": "SURR", "epoch": 2}', "draft_id"),
        (
            "invocation_draft",
            json.dumps({"test_id": test_id, "scenario_id": "aSURRb"}),
            "scenario_id",
        ),
        ("invocation_create", '{"draft_id": "SURR"}', "draft_id"),
        (
            "invocation_terminate",
            json.dumps({"invocation_id": rows[0]["invocation_id"], "reason": "SURR"}),
            "reason",
        ),
        ("create", json.dumps(api.spec("x", scenarios=1)).replace('"x"', '"SURR"', 1), "name"),
        (
            "create",
            json.dumps(api.spec("nested", scenarios=1)).replace("What is", "SURR"),
            "scenarios[0].input",
        ),
    ]
    for op, template, field in cases:
        message = _error(
            _post(api, op, _json_with_surrogate(template), json_type), 422, "validation_error"
        )
        assert message.startswith(f"{field}:"), (op, message)
        assert "surrogate" in message
    inv = api.ok("invocation_get", {"invocation_id": rows[0]["invocation_id"]})
    assert inv["status"] == "queued"  # the terminate with a bad reason changed nothing
    assert "nested" not in _test_names(api)


@pytest.mark.parametrize(
    ("op", "body", "field"),
    [
        ("invocation_create", {"scenario_id": "q000", "model": "strong", "epoch": 1e20}, "epoch"),
        ("invocation_create", {"scenario_id": "q000", "model": "strong", "epoch": 10**30}, "epoch"),
        ("invocation_create", {"scenario_id": "q000", "model": "strong", "epoch": 0}, "epoch"),
        ("invocations", {"page_size": 1e20}, "page_size"),
        ("invocations", {"page_size": 1001}, "page_size"),
        ("list", {"limit": 1e20}, "limit"),
        ("invocation_draft", {"scenario_id": "q000", "epoch": -3}, "epoch"),
        ("invocation_draft", {"scenario_id": "q000", "epoch": 1e20}, "epoch"),
    ],
)
def test_integer_fields_are_bounded(api: Api, op: str, body: dict[str, Any], field: str) -> None:
    test_id = _bounds_test(api)
    if op != "list":
        body = {"test_id": test_id, **body}
    message = _error(api.post(op, body), 422, "validation_error")
    assert message.startswith(f"{field}:"), message
    assert api.ok("invocation_drafts", {"test_id": test_id})["drafts"] == []
    assert api.ok("get", {"test_id": test_id})["counts"] == {"queued": 2}


_BOUNDS: dict[str, str] = {}


def _bounds_test(api: Api) -> str:
    if "id" not in _BOUNDS:
        _BOUNDS["id"] = api.create_test("bounds", scenarios=1)[0]
    return _BOUNDS["id"]


def test_an_edited_draft_keeps_its_epoch_bounds(api: Api) -> None:
    test_id = _bounds_test(api)
    draft = api.ok(
        "invocation_draft", {"test_id": test_id, "scenario_id": "q000", "model": "strong"}
    )
    for epoch in (-3, 0, 1e20):
        message = _error(
            api.post("invocation_draft", {"draft_id": draft["draft_id"], "epoch": epoch}),
            422,
            "validation_error",
        )
        assert message.startswith("epoch:"), message
    assert api.ok("invocation_drafts", {"test_id": test_id})["drafts"][0]["epoch"] == 1
    api.ok("invocation_draft", {"draft_id": draft["draft_id"], "epoch": 3})


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"epochs": 1e20}, "epochs", "integer"),  # pydantic: too large to be an integer
        ({"epochs": 1001}, "epochs", "less than or equal to 1000"),
        (
            {"models": [{"name": "m", "model": "openai/sim-strong", "max_in_flight": 10001}]},
            "models[0].max_in_flight",
            "less than or equal to 10000",
        ),
        ({"provider_limits": {"openai": 10**20}}, "provider_limits.openai", "less than or equal"),
    ],
)
def test_test_specs_are_bounded(
    api: Api, overrides: dict[str, Any], field: str, words: str
) -> None:
    spec = api.spec("bounded-spec", scenarios=1, **overrides)
    message = _error(api.post("create", spec), 422, "validation_error")
    assert message.startswith(f"{field}:") and words in message, message


def test_a_test_over_the_cell_cap_is_refused_before_it_is_built(api: Api) -> None:
    """1,000 scenarios x 2 models x 1,000 epochs = 2,000,000 cells: refused at once, nothing
    stored, and the server does not build the cross product (it answers in well under a
    second of work and its memory does not grow)."""
    spec = api.spec("too-many-cells", scenarios=1000, epochs=1000)
    started = time.monotonic()
    message = _error(api.post("create", spec), 422, "validation_error")
    assert time.monotonic() - started < 10
    assert "epochs" in message and "2,000,000 cells" in message and "1,000,000" in message, message
    assert "too-many-cells" not in _test_names(api)


# --------------------------------------------------------------------------- the event loop


def _health_times(url: str, stop: threading.Event) -> list[float]:
    times: list[float] = []
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            assert client.get(f"{url}/health").status_code == 200
            times.append(time.monotonic() - started)
            time.sleep(0.05)
    return times


def test_health_answers_while_a_store_read_waits_on_the_write_lock(api: Api) -> None:
    """Another connection holds SQLite's write lock. A page with no rows falls back to reading
    the test (which, in today's store, waits for that lock): it waits on a store thread, and
    /health is answered meanwhile."""
    import sqlite3

    test_id, _ = api.create_test("write-lock", scenarios=1)
    holder = sqlite3.connect(api.home / "glow.db", isolation_level=None, timeout=30)
    results: dict[str, Any] = {}

    def page() -> None:  # no completed rows: the fallback read of the test
        results["page"] = api.post("invocations", {"test_id": test_id, "status": "completed"})

    reader = threading.Thread(target=page)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        reader.start()
        time.sleep(0.5)  # the page's read is now waiting for the lock
        started = time.monotonic()
        health = httpx.get(f"{api.url}/health", timeout=30)
        waited = time.monotonic() - started
        assert health.status_code == 200 and waited < 1.0, f"/health took {waited:.1f} s"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    reader.join(60)
    assert results["page"].status_code == 200, results["page"].text
    assert results["page"].json() == {"invocations": []}


def test_a_catastrophic_regex_standard_fails_while_the_api_answers(api: Api) -> None:
    """The model (sim-echo) answers "aaa...a!", the rubric's regex backtracks on it forever:
    the standard fails within its limit, and /health and other ops answer all the while."""
    rubric = api.home / "catastrophic.yaml"
    rubric.write_text(
        "name: catastrophic\nversion: '1'\nstandards:\n"
        "  - name: runaway\n    kind: regex\n    params: {pattern: '(a|aa)+$', timeout_s: 1}\n"
        "  - name: anything\n    kind: regex\n    params: {pattern: '.'}\n"
    )
    spec = api.spec("catastrophic", scenarios=1)
    spec["scenarios"] = [{"id": "evil", "input": "a" * 80 + "!", "reference": "x"}]
    spec["models"] = [{**spec["models"][0], "name": "echo", "model": "openai/sim-echo"}]
    spec["rubric"] = str(rubric)
    created = api.ok("create", spec)
    test_id = created["test"]["test_id"]
    (row,) = api.ok("invocations", {"test_id": test_id})["invocations"]
    stop = threading.Event()
    times: list[float] = []
    watcher = threading.Thread(target=lambda: times.extend(_health_times(api.url, stop)))
    watcher.start()
    try:
        started = time.monotonic()
        api.ok("invocation_run", {"invocation_id": row["invocation_id"]})
        inv = api.wait_status(row["invocation_id"], {"completed", "failed"}, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        watcher.join(60)
    assert inv["status"] in ("completed", "failed"), inv
    assert elapsed < 30, elapsed
    detail = api.ok("invocation_get", {"invocation_id": row["invocation_id"]})
    text = json.dumps(detail)
    assert "backtracks catastrophically" in text, text[:2000]
    assert times and max(times) < 1.0, f"/health took up to {max(times):.2f} s"
