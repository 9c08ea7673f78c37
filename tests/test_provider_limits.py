"""A provider's limit shared by two tests running at once, through a Prefect global limit.

Each test alone would keep 4 calls in flight; `provider_limits: {openai: 2}` must hold both
together to 2, measured at the model server (one simulated model both tests call).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import FAKE_KEY, ROOT


@pytest.fixture(scope="module")
def slow_simulator() -> Any:
    from glow.simulator import Profile, SimulatorProcess

    profiles = {"sim-shared": Profile(1.0, 0.4, kind="echo")}
    with SimulatorProcess(profiles=profiles) as sim:
        yield sim


def _spec(folder: Path, sim: Any) -> Path:
    folder.mkdir()
    scenarios = [{"id": f"s{i}", "input": f"say {i}", "reference": f"say {i}"} for i in range(8)]
    (folder / "s.yaml").write_text(yaml.safe_dump(scenarios))
    spec = {
        "name": f"shared-{folder.name}",
        "scenarios": str(folder / "s.yaml"),
        "models": [
            {
                "name": "sim-shared",
                "model": "openai/sim-shared",
                "api_base": sim.url,
                "api_key_env": "GLOW_SIM_API_KEY",
                "max_in_flight": 4,
                "prices": {"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7},
            }
        ],
        "rubric": "exact_answer",
        "concurrency": 4,
        "provider_limits": {"openai": 2},
    }
    path = folder / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_tests_share_one_provider_limit(
    tmp_path: Path, prefect_server: str, slow_simulator: Any
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "GLOW_SIM_API_KEY": FAKE_KEY,
        "GLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'glow.db'}",
        "GLOW_RESULTS_DIR": str(tmp_path / "results"),
    }
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "glow.cli", "run", str(_spec(tmp_path / name, slow_simulator))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name in ("a", "b")
    ]
    for process in runs:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        assert "completed:8" in output.replace(" ", "") or "'completed': 8" in output, output
    stats = httpx.get(f"{slow_simulator.base_url}/stats").json()["models"]["sim-shared"]
    assert stats["requests"] == 16
    assert 1 < stats["max_in_flight"] <= 2, stats
