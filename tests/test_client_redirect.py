"""The CLI client never sends the token to another host on a redirect (issue 11, point 5).

Two real HTTP servers on 127.0.0.1, on different ports (different origins, as a browser or
curl counts them): the first answers the op with a redirect, the second records what arrives.
The client is `glow tests ...` itself, run as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT

TOKEN = "client-redirect-token-0123456789"


class Recorder(ThreadingHTTPServer):
    """Records (method, path, Authorization) of every request; redirects by a path table."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str, str | None]] = []
        self.redirects: dict[str, str] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        target = self.server.redirects.get(self.path)
        if target is not None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"landed": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    pair = (Recorder(), Recorder())
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in pair]
    for thread in threads:
        thread.start()
    try:
        yield pair
    finally:
        for server in pair:
            server.shutdown()
            server.server_close()


def _glow_get(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env |= {"GLOW_TOKEN": TOKEN, "GLOW_INSTANCE_URL": url, "NO_PROXY": "*"}
    return subprocess.run(
        [sys.executable, "-m", "glow.cli", "tests", "get", "--body", '{"test_id": "t"}'],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_is_not_forwarded_on_a_redirect_to_another_host(
    servers: tuple[Recorder, Recorder],
) -> None:
    api, elsewhere = servers
    port = api.server_address[1]
    api.redirects["/test/get"] = f"{elsewhere.base}/landing"
    done = _glow_get(api.base)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"landed": "/landing"}
    assert api.seen == [("POST", "/test/get", f"Bearer {TOKEN}")]
    assert elsewhere.seen == [("GET", "/landing", None)], elsewhere.seen

    # Another host name on the same port is another host too.
    api.seen.clear()
    api.redirects["/test/get"] = f"http://localhost:{port}/renamed"
    assert _glow_get(api.base).returncode == 0
    assert api.seen[-1] == ("GET", "/renamed", None), api.seen


def test_token_is_kept_on_a_redirect_within_the_same_server(
    servers: tuple[Recorder, Recorder],
) -> None:
    api, _ = servers
    api.redirects["/test/get"] = "/moved"
    done = _glow_get(api.base)
    assert done.returncode == 0, done.stderr
    assert api.seen == [
        ("POST", "/test/get", f"Bearer {TOKEN}"),
        ("GET", "/moved", f"Bearer {TOKEN}"),
    ]
