"""How `glow run` ends: kill -9 leaves no process behind, a budget stop and bad setups exit with
their own codes and one message (no traceback), failed cells are summed up by error type.

Real parts only: `python -m glow.cli run` as a subprocess (with the embedded Prefect server and
the bundled simulator it starts itself, or the session's Prefect server and simulator), a real
SQLite store, processes found through /proc. (The Prefect UI cancel is in test_cancel_crash.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FAKE_KEY, ROOT, process_alive, wait_for

CATEGORIES = ("exact", "multiple_choice", "free_text", "tool_use")


def _write_test(tmp: Path, per_category: int = 3, **overrides: Any) -> Path:
    """The quickstart test cut to a few text scenarios per category, with `overrides`."""
    lines = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    picked: list[dict[str, Any]] = []
    for category in CATEGORIES:
        picked += [r for r in rows if r["metadata"]["category"] == category][:per_category]
    (tmp / "scenarios.jsonl").write_text("\n".join(json.dumps(s) for s in picked) + "\n")
    spec = yaml.safe_load((ROOT / "data/tests/quickstart.yaml").read_text())
    spec["scenarios"] = str(tmp / "scenarios.jsonl")
    spec.update(overrides)
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A new user's shell: no Prefect server or simulator configured, Glow's data in `tmp`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "GLOW_SIMULATOR_URL", "GLOW_SIM_API_KEY")
    }
    env.update(
        PREFECT_HOME=str(tmp / "prefect-home"),
        GLOW_DATA_DIR=str(tmp),
        GLOW_DATABASE_URL=f"sqlite:///{tmp / 'glow.db'}",
        GLOW_RESULTS_DIR=str(tmp / "results"),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )
    env.update(extra)
    return env


def _glow(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glow.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process /proc shows now."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")
def test_kill_9_of_glow_run_leaves_no_server_behind(tmp_path: Path) -> None:
    """kill -9 of `glow run` alone (not its group): its simulator and Prefect server go too."""
    from glow.store import Store

    path = _write_test(tmp_path, per_category=15, concurrency=2)
    env = _clean_env(tmp_path)
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "glow.cli", "run", str(path)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, so the test never signals itself
    )
    tree: list[int] = []
    try:
        store = Store(env["GLOW_DATABASE_URL"])

        def cells_completed() -> bool:
            try:
                tests = store.list_tests()
                return (
                    bool(tests)
                    and store.count_invocations(tests[0].test_id).get("completed", 0) >= 2
                )
            except Exception:  # noqa: BLE001 - the tables are not created yet
                return False

        wait_for(cells_completed, 120, "cells completed on the embedded server")
        tree = _descendants(proc.pid)
        commands = {pid: _cmdline(pid) for pid in tree}
        assert any("glow.simulator" in c for c in commands.values()), commands
        assert any("uvicorn" in c and "prefect" in c for c in commands.values()), commands
        ports = [int(c.split("--port ")[1].split()[0]) for c in commands.values() if "--port " in c]
        os.kill(proc.pid, signal.SIGKILL)  # the CLI process only, as `kill -9 PID` does
        proc.wait(timeout=10)

        def all_gone() -> bool:
            return not any(process_alive(pid) for pid in tree)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all_gone():
            time.sleep(0.2)
        survivors = {pid: _cmdline(pid) for pid in tree if process_alive(pid)}
        assert not survivors, f"left behind after kill -9: {survivors}"
        assert not [p for p in ports if p and _accepts(p)], "a server port still answers"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in tree:  # only what this test started
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        print(log.read_text(errors="replace")[-3000:])


def test_budget_stop_exits_4_with_the_resume_command(
    tmp_path: Path, prefect_server: str, simulator: Any
) -> None:
    from glow.store import Store

    path = _write_test(tmp_path, budget_usd=4e-5, concurrency=2)
    env = _clean_env(
        tmp_path,
        PREFECT_API_URL=prefect_server,
        GLOW_SIMULATOR_URL=simulator.url,
        GLOW_SIM_API_KEY=FAKE_KEY,
    )
    done = _glow(["run", str(path)], env, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 4, output
    assert "Traceback" not in output
    store = Store(env["GLOW_DATABASE_URL"])
    (test,) = store.list_tests()
    counts = store.count_invocations(test.test_id)
    assert test.status == "budget_exhausted" and counts.get("queued"), counts
    assert "budget exhausted" in output
    assert f"{counts['queued']} queued" in output and f"{counts['completed']} completed" in output
    assert f"glow run {path} --resume {test.test_id}" in output


def test_prefect_api_down_is_refused_up_front(tmp_path: Path) -> None:
    """PREFECT_API_URL at a closed port: one message saying what to do, exit 2, at once."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    url = f"http://127.0.0.1:{closed}/api"
    env = _clean_env(tmp_path, PREFECT_API_URL=url)
    started = time.monotonic()
    done = _glow(["run", str(_write_test(tmp_path))], env, timeout=120)
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert f"PREFECT_API_URL={url} does not answer" in output
    assert "unset PREFECT_API_URL" in output and "prefect server start" in output
    assert "simulator" not in output  # nothing was started
    assert elapsed < 15, f"took {elapsed:.1f}s"


def test_bad_scenario_line_is_file_line_exit_2_before_any_process(tmp_path: Path) -> None:
    path = _write_test(tmp_path)
    scenarios = tmp_path / "scenarios.jsonl"
    lines = scenarios.read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # a line cut in half
    scenarios.write_text("\n".join(lines) + "\n")
    done = _glow(["run", str(path)], _clean_env(tmp_path), timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"{scenarios}:4:" in output
    assert "Traceback" not in output
    assert "started the bundled model simulator" not in output
    assert "Prefect server" not in output
    assert not (tmp_path / "prefect-home").exists()


def test_bad_line_in_the_simulators_scenarios_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled simulator reads data/scenarios: a bad line there is bad input too (it used
    to make the simulator exit and `glow run` print its traceback). In process: the check runs
    before anything starts, and the simulator's folder can be pointed at a broken copy."""
    from typer.testing import CliRunner

    import glow.simulator.scenarios
    from glow.cli import app

    folder = tmp_path / "sim-scenarios"
    folder.mkdir()
    good = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()[:3]
    (folder / "quickstart.jsonl").write_text("\n".join([*good, '{"id": "x", "input": ']) + "\n")
    monkeypatch.setattr(glow.simulator.scenarios, "DEFAULT_SCENARIOS", folder)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    for name, value in _clean_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GLOW_SIMULATOR_URL", "unset")  # so that teardown restores it
    monkeypatch.delenv("GLOW_SIMULATOR_URL")  # the CLI then starts (and sets) its own
    # Should anything start after all, it fails fast at this closed port instead of running.
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{closed}/api")
    monkeypatch.setattr("glow.cli.local._check_prefect_api", lambda: None, raising=False)
    path = _write_test(tmp_path)
    result = CliRunner().invoke(app, ["run", str(path)])
    output = result.output
    assert result.exit_code == 2, (output, result.exception)
    assert f"{folder / 'quickstart.jsonl'}:4:" in output
    assert "started the bundled model simulator" not in output


def test_failed_cells_are_printed_by_error_type(
    tmp_path: Path, prefect_server: str, simulator: Any
) -> None:
    """Two models failing in two different ways: one line per error type, with its count."""
    from glow.simulator import SimulatorProcess
    from glow.store import Store

    faults = {"sim-fast": {"400": 1.0}, "sim-strong": {"context": 1.0}}
    with SimulatorProcess(faults=json.dumps(faults)) as faulty:
        env = _clean_env(
            tmp_path,
            PREFECT_API_URL=prefect_server,
            GLOW_SIMULATOR_URL=faulty.url,
            GLOW_SIM_API_KEY=FAKE_KEY,
        )
        done = _glow(["run", str(_write_test(tmp_path, per_category=2))], env, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    store = Store(env["GLOW_DATABASE_URL"])
    (test,) = store.list_tests()
    failed = store.list_invocations(test.test_id, status="failed")
    by_type: dict[str, int] = {}
    for invocation in failed:
        key = invocation.error_type or "unknown"
        by_type[key] = by_type.get(key, 0) + 1
    assert len(by_type) >= 2, by_type
    assert f"{len(failed)} failed cells" in output
    for error_type, count in by_type.items():
        assert f"  {error_type}: {count} (e.g. " in output, (error_type, output)
