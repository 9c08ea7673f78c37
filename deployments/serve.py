"""Serve the run-test flow as a deployment, so tests can be scheduled and cancelled from Prefect.

    prefect server start                      # in one terminal (UI at http://127.0.0.1:4200)
    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py
    prefect deployment run 'run-test/local' --param path=data/tests/quickstart.yaml --watch

A served run is owned by this process, so Cancel in the UI reaches it.
"""

from __future__ import annotations

from flows.run_test import run_test

if __name__ == "__main__":
    run_test.serve(name="local", tags=["glow"])
