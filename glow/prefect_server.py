"""An embedded Prefect API server for `glow run` when no PREFECT_API_URL is configured.

Prefect's own ephemeral mode prints its shutdown noise (CancelledError tracebacks) into the
user's terminal. This starts the same server (uvicorn on 127.0.0.1, Prefect's default database,
so the runs stay browsable later with `prefect server start`) with its output in a log file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from glow.lifeline import lifeline_popen_kwargs, stop_group

# Prefect records each task-run event with an insert of its own by default (batch size 1): on
# a small machine its server then falls behind a large test and costs more CPU than the test
# itself. Batching the recorder makes it keep up (bench/PROFILE.md); the UI lags by at most the
# flush interval.
# The event persister (the UI's event feed) and triggers (automations) are off: each consumer of
# Prefect's in-memory message bus holds at most 10,000 events and drops the rest for good. The
# persister falls that far behind on a large test, and the load it adds made the task-run
# recorder fall behind too, so task runs went missing from the UI (PROFILE.md). This server lives
# only while `glow run` or `glow serve` does, so there are no automations to miss. The user's
# environment wins; README gives the settings for a `prefect server start` of your own.
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_problem(url: str, timeout_s: float = 5.0) -> str | None:
    """Why the Prefect API at `url` cannot be used, or None when it answers.

    Checked before a run starts anything: Prefect's client retries a server that does not answer
    for a long while and then fails with an httpx traceback. Only a server that does not answer
    (or says it is broken) is refused; an auth error is left for Prefect to report.
    """
    health = f"{url.rstrip('/')}/health"
    headers = {}
    if os.environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['PREFECT_API_KEY']}"
    try:
        response = httpx.get(health, timeout=timeout_s, headers=headers)
    except httpx.HTTPError as exc:
        return f"does not answer ({type(exc).__name__}: {exc})"
    if response.status_code == 404:
        return "answers, but not as a Prefect API (GET /health: 404; the URL ends in /api)"
    if response.status_code >= 500:
        return f"answers GET /health with {response.status_code}"
    return None


@contextmanager
def embedded_prefect(log_path: Path, startup_timeout_s: float = 120.0) -> Iterator[str | None]:
    """Yield the API URL in use: the configured one, or one of a server started here."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **SERVER_SETTINGS,  # the user's own environment wins
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "glow.lifeline",  # the server and its children die with this process
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            **lifeline_popen_kwargs(),
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited early; see {log_path}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start in time; see {log_path}")
            time.sleep(0.3)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _flush_run_logs()
        os.environ.pop("PREFECT_API_URL", None)
        stop_group(process, timeout=10)


def _flush_run_logs() -> None:
    """Send the flow's queued log lines before the server stops: Prefect's log worker would
    otherwise try at exit, find no server and print "Error logging to API"."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=5)
    except Exception:  # noqa: BLE001 - losing a late log line must not fail the run
        pass


def recorded_task_runs(api_url: str, flow_run_id: str) -> int:
    """How many task runs of `flow_run_id` the Prefect server has recorded so far."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    response = httpx.post(f"{api_url}/task_runs/count", json=body, timeout=10)
    response.raise_for_status()
    return int(response.json())


def wait_for_task_runs(
    api_url: str,
    flow_run_id: str,
    expected: int,
    timeout_s: float = 300.0,
    on_progress: Callable[[int, int], None] | None = None,
    stalled_s: float = 30.0,
) -> int:
    """Wait until the server has recorded `expected` task runs of the flow run; return the count.

    Prefect records task runs from their state events in the background, behind a busy flow.
    An embedded server stopped before it caught up
    would leave the cells missing from the UI for good, so `glow run` waits here first. A count
    that has not moved for `stalled_s` will not move again (the server dropped those events),
    so the wait ends there rather than at `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    count, moved_at = -1, time.monotonic()
    while True:
        try:
            latest = recorded_task_runs(api_url, flow_run_id)
            if latest != count:
                count, moved_at = latest, time.monotonic()
        except httpx.HTTPError:
            pass
        if on_progress is not None and count >= 0:
            on_progress(count, expected)
        now = time.monotonic()
        if count >= expected or now > deadline or now - moved_at > stalled_s:
            return count
        time.sleep(0.5)
