"""The flows start the bundled simulator themselves, and sharding refuses a store it cannot share.

A user's shell has no GLOW_SIMULATOR_URL: the run-test flow and the invocation flow (glow serve's
invocation_run) must start the simulator for a test that names it and stop it after, and a
record whose stored spec holds a dead simulator address must use the one running now. Real
Prefect server, real simulator subprocesses, real SQLite store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_run_test import write_test

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def no_simulator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a new user's shell: no simulator address, no simulator key."""
    monkeypatch.delenv("GLOW_SIMULATOR_URL", raising=False)
    monkeypatch.delenv("GLOW_SIM_API_KEY", raising=False)


def _answers(url: str) -> bool:
    try:
        httpx.get(url.removesuffix("/v1") + "/stats", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def test_run_test_and_invocation_flow_start_the_simulator_themselves(
    glow_env: Path, store: Any, no_simulator_env: None
) -> None:
    from flows.run_test import run_test_sync
    from flows.single_invocation import run_invocation_flow
    from glow import bundled_simulator, cancel, eventloop
    from glow.store import RERUNNABLE

    path = write_test(glow_env)
    result = run_test_sync(path=str(path))
    counts = result["counts"]
    assert counts.get("completed", 0) >= 8 and not counts.get("queued"), counts
    # The flow stopped the simulator it started and left the environment as it found it.
    assert "GLOW_SIMULATOR_URL" not in os.environ and "GLOW_SIM_API_KEY" not in os.environ
    # The stored spec names the address of the simulator that run used: it is gone now.
    first_url = store.get_test(result["test_id"]).spec.models[0].api_base
    assert first_url and first_url.startswith("http://127.0.0.1:"), first_url
    assert not _answers(first_url)

    # glow serve's invocation_run: the API opens a run, the invocation flow carries it out.
    inv = next(i for i in store.list_invocations(result["test_id"], status="completed"))
    run = store.start_run(inv.invocation_id, allowed=RERUNNABLE, owner=cancel.OWNER, lease_s=60)
    out = eventloop.run(run_invocation_flow(invocation_id=inv.invocation_id, run_id=run.run_id))
    assert out["status"] == "completed", out
    again = store.get_invocation(inv.invocation_id)
    assert len(again.runs) == 2 and again.runs[-1].error_type is None, again.runs[-1]
    assert "GLOW_SIMULATOR_URL" not in os.environ
    assert bundled_simulator._process is None


def test_rebind_moves_only_the_models_the_file_puts_on_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glow import bundled_simulator
    from glow.models import TestSpec

    raw = {
        "name": "t",
        "scenarios": "s.jsonl",
        "rubric": "exact_answer",
        "models": [
            {"name": "sim", "model": "openai/sim-fast", "api_base": "${GLOW_SIMULATOR_URL}"},
            {"name": "real", "model": "openai/x", "api_base": "http://127.0.0.1:9/v1"},
        ],
        "judge": {"name": "j", "model": "openai/sim-judge", "api_base": "${GLOW_SIMULATOR_URL}"},
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    stored = TestSpec.model_validate(
        yaml.safe_load(path.read_text().replace("${GLOW_SIMULATOR_URL}", "http://old/v1"))
    )
    monkeypatch.setenv("GLOW_SIMULATOR_URL", "http://127.0.0.1:1234/v1")
    spec = bundled_simulator.rebind(stored, path)
    assert [m.api_base for m in spec.models] == [
        "http://127.0.0.1:1234/v1",
        "http://127.0.0.1:9/v1",
    ]
    assert spec.judge is not None and spec.judge.api_base == "http://127.0.0.1:1234/v1"


def test_shards_are_refused_on_sqlite_naming_the_setting(glow_env: Path, store: Any) -> None:
    from flows.run_test import run_test_sync
    from glow.errors import SpecError

    path = write_test(glow_env, shards=2)
    with pytest.raises(SpecError, match=r"shards: 2 shards need .*GLOW_DATABASE_URL=postgresql"):
        run_test_sync(path=str(path))
    assert store.list_tests() == []  # refused before anything was written


def test_shards_field_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glow.errors import SpecError
    from glow.spec import load_test

    monkeypatch.setenv("GLOW_SIMULATOR_URL", "http://127.0.0.1:9/v1")
    path = write_test(tmp_path, shards=0)
    with pytest.raises(SpecError, match="shards"):
        load_test(path)


def test_shard_split_is_stable_and_covers_every_cell() -> None:
    from glow.sharding import shard_of

    ids = [f"inv-{i}" for i in range(1000)]
    split = [shard_of(i, 3) for i in ids]
    assert split == [shard_of(i, 3) for i in ids]
    assert set(split) == {0, 1, 2} and min(split.count(s) for s in range(3)) > 250
