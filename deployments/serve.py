"""Serve the run-test flow (and run-shard) as deployments, so tests can be scheduled and cancelled.

    prefect server start                      # in one terminal (UI at http://127.0.0.1:4200)
    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py
    prefect deployment run 'run-test/local' --param path=data/tests/quickstart.yaml --watch

A served run is owned by this process, so Cancel in the UI reaches it. Runs start in the project
root whatever directory this is started from, so relative test paths mean the same as for
`glow run` from the root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# `python deployments/serve.py` puts deployments/ first on sys.path, not the project.
sys.path.insert(0, str(PROJECT_ROOT))

from prefect import serve  # noqa: E402

from flows.run_shard import run_shard  # noqa: E402
from flows.run_test import run_test  # noqa: E402

if __name__ == "__main__":
    os.chdir(PROJECT_ROOT)
    serve(
        run_test.to_deployment(name="local", tags=["glow"]),
        run_shard.to_deployment(name="shard", tags=["glow", "shard"]),
    )
