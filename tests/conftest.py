"""Shared fixtures: one Prefect test server, one model simulator, a fresh store per test.

Real parts only: Prefect's own `prefect_test_harness` (a temporary server, started once per
session because it takes ~20 s), the bundled OpenAI-compatible simulator over real HTTP on
127.0.0.1 (the only fake: there is no model provider offline), and a real SQLite file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_KEY = "sk-glowtest-FAKEKEY-0123456789abcdef"

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["GLOW_SIM_API_KEY"] = FAKE_KEY


def _prefect_server_settings() -> None:
    """The test server gets the settings Glow's embedded server uses (batched task-run records,
    no event persister or triggers)."""
    from glow.prefect_server import SERVER_SETTINGS

    for name, value in SERVER_SETTINGS.items():
        os.environ.setdefault(name, value)


_prefect_server_settings()


@pytest.fixture(scope="session")
def simulator() -> Iterator[object]:
    from glow.simulator import SimulatorProcess

    with SimulatorProcess(scenarios=[ROOT / "data" / "scenarios"]) as sim:
        os.environ["GLOW_SIMULATOR_URL"] = sim.url
        yield sim


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A temporary Prefect server for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def glow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SQLite store and results folder for one test, through GLOW_* settings."""
    from glow.settings import get_settings

    monkeypatch.setenv("GLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'glow.db'}")
    monkeypatch.setenv("GLOW_RESULTS_DIR", str(tmp_path / "results"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def store(glow_env: Path) -> object:
    from glow.store import Store

    return Store.from_settings()


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def process_alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is gone for our purpose); Linux /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
