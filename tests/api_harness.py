"""A real `glow serve` for the API and CLI tests: a subprocess on 127.0.0.1 with its own SQLite
store, talking to the session's Prefect test server, and a simulator with a slow model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FAKE_KEY, ROOT

TOKEN = "glow-test-token-0123456789"
SLOW_S = 30.0  # the hung model: far longer than any assertion waits


@dataclass
class Api:
    url: str
    token: str
    sim_url: str
    sim_base: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def post(self, op: str, body: Any, *, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{self.url}/test/{op}", json=body, headers=headers, timeout=30)

    def ok(self, op: str, body: Any) -> Any:
        response = self.post(op, body)
        assert response.status_code == 200, (op, response.status_code, response.text)
        return response.json()

    def sim_requests(self, model: str) -> int:
        stats = httpx.get(f"{self.sim_base}/stats", timeout=10).json()
        return int(stats["models"].get(model, {}).get("requests", 0))

    def spec(self, name: str, scenarios: int = 3, **overrides: Any) -> dict[str, Any]:
        """An inline test: exact-answer questions, a fast model and a hung one (1 in flight)."""
        common = {
            "api_base": self.sim_url,
            "api_key_env": "GLOW_SIM_API_KEY",
            "prices": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7},
        }
        spec = {
            "name": name,
            "scenarios": [
                {
                    "id": f"q{i:03d}",
                    "input": f"What is {i} + {i}?",
                    "reference": str(2 * i),
                    "metadata": {"category": "arithmetic"},
                }
                for i in range(scenarios)
            ],
            "models": [
                {"name": "strong", "model": "openai/sim-strong", **common},
                {"name": "slow", "model": "openai/sim-slow", "max_in_flight": 1, **common},
            ],
            "rubric": "exact_answer",
            "timeout_s": 120,
            "max_retries": 0,
        }
        spec.update(overrides)
        return spec

    def create_test(self, name: str, scenarios: int = 3) -> tuple[str, list[dict[str, Any]]]:
        test_id = self.ok("create", self.spec(name, scenarios))["test"]["test_id"]
        rows = self.ok("invocations", {"test_id": test_id, "page_size": 500})["invocations"]
        return test_id, rows

    def wait_status(self, invocation_id: str, statuses: set[str], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            inv = self.ok("invocation_get", {"invocation_id": invocation_id})
            if inv["status"] in statuses or time.monotonic() > deadline:
                return inv
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: dict[str, str], port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "glow.cli", "serve", "--port", str(port), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"glow serve exited: {process.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("glow serve did not start")


@pytest.fixture(scope="module")
def api(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from glow.simulator import SimulatorProcess

    home = tmp_path_factory.mktemp("api")
    with SimulatorProcess(profiles={"sim-slow": f"0.9:{SLOW_S}"}) as sim:
        port = free_port()
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "GLOW_DATA_DIR": str(home),
            "GLOW_DATABASE_URL": f"sqlite:///{home / 'glow.db'}",
            "GLOW_RESULTS_DIR": str(home / "results"),
            "GLOW_TOKEN": TOKEN,
            "GLOW_SIM_API_KEY": FAKE_KEY,
        }
        process = start_server(env, port)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process)
            client_env = {**os.environ, "GLOW_INSTANCE_URL": url, "GLOW_TOKEN": TOKEN}
            yield Api(url, TOKEN, sim.url, sim.base_url, home, client_env)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
