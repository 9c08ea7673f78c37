"""Run one child process and measure it: wall, user+sys CPU and peak RSS from `os.wait4`.

Why wait4: its rusage is that one child's (plus the children it waited for), so the figures of
the Glow flow, the bare loop and Inspect are never mixed with the bench's own servers. Children
report what only they know (in-process wall, scores) as one `BENCH_RESULT {json}` stdout line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ChildRun:
    """What one measured child did: process-level figures plus its own report."""

    name: str
    returncode: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    max_rss_mb: float
    report: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.report)

    @property
    def run_wall_s(self) -> float | None:
        """The child's own timing of the workload (imports and setup excluded)."""
        value = self.report.get("run_wall_s")
        return float(value) if value is not None else None


def emit(report: dict[str, Any]) -> None:
    """Child side: print the report line the parent parses."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(report, default=str) + "\n")
    sys.stdout.flush()


def run_child(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    log_dir: Path,
    timeout_s: float,
    wrap: list[str] | None = None,
) -> ChildRun:
    """Start `argv` (optionally under a profiler `wrap`), wait for it, and measure it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    cmd = [*(wrap or []), *argv]
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        deadline = started + timeout_s
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    report: dict[str, Any] = {}
    for line in out_path.read_text(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            report = json.loads(line[len(RESULT_PREFIX) :])
    return ChildRun(
        name=name,
        returncode=proc.returncode,
        wall_s=wall,
        cpu_user_s=usage.ru_utime,
        cpu_sys_s=usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024.0,  # KiB on Linux
        report=report,
        log=err_path,
    )


def python(module: str, *args: str) -> list[str]:
    """argv running a bench module with the current interpreter."""
    return [sys.executable, "-m", module, *args]


_RESULT_FILES = (":!bench/RESULTS.md", ":!bench/results.jsonl")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            # The results files change with every run: only code makes a run "+dirty".
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *_RESULT_FILES],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
