"""Two tests at once on one SQLite file, and one on PostgreSQL: all complete, nothing locked."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import ROOT
from sqlalchemy import create_engine, text
from test_run_test import write_test
from test_store import PG_ADMIN, _postgres_available

pytestmark = pytest.mark.usefixtures("prefect_server", "simulator")


def _glow_run(path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "glow.cli", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_two_tests_on_one_sqlite_and_one_on_postgres(
    tmp_path: Path, prefect_server: str, simulator: Any
) -> None:
    base_env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "GLOW_RESULTS_DIR": str(tmp_path / "results"),
    }
    sqlite_env = {**base_env, "GLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    runs: list[tuple[subprocess.Popen[str], str]] = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        runs.append((_glow_run(write_test(folder, concurrency=8), sqlite_env), "sqlite"))

    pg_db = None
    if _postgres_available():
        pg_db = f"glow_test_{uuid.uuid4().hex[:12]}"
        with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_db}"'))
        pg_env = {
            **base_env,
            "GLOW_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}",
        }
        folder = tmp_path / "pg"
        folder.mkdir()
        runs.append((_glow_run(write_test(folder, concurrency=8), pg_env), "postgres"))

    try:
        for process, backend in runs:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, f"{backend}: {output}"
            assert "locked" not in output and "Traceback" not in output, output
        results = sorted((tmp_path / "results").iterdir())
        assert len(results) == len(runs)
        for folder in results:
            invocations = pd.read_parquet(folder / "invocations.parquet")
            assert len(invocations) == 18 and set(invocations["status"]) == {"completed"}
    finally:
        if pg_db:
            with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))
