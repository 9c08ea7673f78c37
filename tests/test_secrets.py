"""Keys never land in an output: store, traces, artifacts, Prefect logs, parquet, our own logs.

The simulator answers some calls with a 401 whose message echoes the request's key (as real
providers do), so the key really reaches error paths; one model reads its key from an env var,
the other from a Prefect Secret block. Every output is then searched for the planted keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

ENV_KEY = "sk-glowsecret-ENVPLANT-5b1d8e2f9a7c3604"
BLOCK_KEY = "sk-glowsecret-BLOCKPLANT-0e4a6c2b8d1f9375"
BLOCK_NAME = "glow-test-sim-key"


@pytest.fixture(scope="module")
def leaky_simulator() -> Iterator[Any]:
    """A simulator where 30% of calls (any model) fail with a 401 that echoes the key."""
    from glow.simulator import SimulatorProcess

    faults = {"*": {"rates": {"401": 0.3}, "seed": 7}}
    with SimulatorProcess(scenarios=[ROOT / "data" / "scenarios"], faults=faults) as sim:
        yield sim


def test_planted_keys_are_in_no_output(
    prefect_server: str,
    glow_env: Path,
    leaky_simulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from flows.run_test import run_test_sync
    from glow.store import Store

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GLOW_LEAKY_KEY", ENV_KEY)
    Secret(value=BLOCK_KEY).save(BLOCK_NAME, overwrite=True)

    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    strong, fast = spec["models"]
    strong.update(api_base=leaky_simulator.url, api_key_env="GLOW_LEAKY_KEY")
    fast.update(api_base=leaky_simulator.url, api_key_secret=BLOCK_NAME)
    del fast["api_key_env"]
    spec["judge"].update(api_base=leaky_simulator.url, api_key_env="GLOW_LEAKY_KEY")
    lines = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()[:12]
    (glow_env / "s.jsonl").write_text("\n".join(lines) + "\n")
    spec.update(scenarios=str(glow_env / "s.jsonl"), max_retries=0)
    path = glow_env / "test.yaml"
    path.write_text(yaml.safe_dump(spec))

    result = run_test_sync(path=str(path))
    store = Store.from_settings()
    invocations = store.list_invocations(result["test_id"])
    failed = [i for i in invocations if i.status == "failed"]
    # The keys really reached the error path (masked), from both sources.
    assert {i.model for i in failed} == {"sim-strong", "sim-fast"}, [i.model for i in failed]
    assert all("***" in (i.error_message or "") for i in failed)

    outputs: dict[str, str] = {}
    for file in glow_env.rglob("*"):
        if file.is_file():
            outputs[str(file)] = file.read_bytes().decode("latin-1")
    flow_run_id = store.get_test(result["test_id"]).flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    assert any(a.key and a.key.startswith("trace-") for a in artifacts)
    outputs["artifacts"] = json.dumps([str(a.data) for a in artifacts])
    outputs["prefect logs"] = "\n".join(log.message for log in logs)
    outputs["python logs"] = caplog.text
    outputs["stdout/stderr"] = "".join(capfd.readouterr())
    for key in (ENV_KEY, BLOCK_KEY):
        leaked = [where for where, text in outputs.items() if key in text]
        assert not leaked, f"{key[:20]}... leaked into {leaked}"
