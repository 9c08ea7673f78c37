"""The servers a bench needs, started outside every timing: the model simulator and Prefect."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.workload import MODEL


@contextmanager
def simulator(
    scenarios: Path, latency: float, faults: dict[str, Any] | None = None
) -> Iterator[str]:
    """A loopback simulator whose `bench-exact` model is always right, at a fixed latency.

    `faults` (a `glow.simulator.Faults` JSON form per model) makes it fail some calls (soak mode).
    """
    from glow.simulator import SimulatorProcess

    with SimulatorProcess(
        scenarios=scenarios,
        profiles={MODEL: f"1.0:{latency}"},
        latency=latency,
        faults=faults,
        startup_timeout=120.0,
    ) as sim:
        yield sim.url


@contextmanager
def prefect_server(
    directory: Path, database_url: str | None = None, settings: dict[str, str] | None = None
) -> Iterator[tuple[str, psutil.Process | None]]:
    """A Prefect API server with a fresh SQLite database in `directory`; yields (url, process).

    The process handle lets the bench charge the server's CPU during Glow's run to Glow.
    `database_url` replaces the SQLite file (a PostgreSQL server); `settings` are further
    PREFECT_* variables for the server (its messaging broker, say).
    """
    from glow.prefect_server import embedded_prefect

    saved = {
        k: os.environ.get(k)
        for k in (
            "PREFECT_API_URL",
            "PREFECT_API_DATABASE_CONNECTION_URL",
            "PREFECT_SERVER_ANALYTICS_ENABLED",
            *(settings or {}),
        )
    }
    os.environ.pop("PREFECT_API_URL", None)  # always a server of our own, never a shared one
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = (
        database_url or f"sqlite+aiosqlite:///{directory / 'prefect.db'}"
    )
    os.environ.update(settings or {})
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with embedded_prefect(directory / "prefect-server.log", startup_timeout_s=180) as url:
            server = next(
                (
                    p
                    for p in psutil.Process().children(recursive=True)
                    if "prefect.server.api.server:create_app" in " ".join(p.cmdline())
                ),
                None,
            )
            yield str(url), server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cpu_seconds(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system
