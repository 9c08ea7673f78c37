"""Mode `flow`: the same workload through (a) Glow's flow, (b) a bare litellm loop, (c) Inspect.

Order: bare, Inspect, Prefect's floor (a task run + keyed artifact per cell, nothing else), then
Glow. Each Prefect runner gets a server of its own, which is stopped only once it has recorded
every task run, so no server's backlog steals CPU from the runner after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import report, servers, workload
from bench.measure import ROOT, ChildRun, python, run_child


def child_env(tmp: Path, prefect_url: str | None) -> dict[str, str]:
    """Environment of every runner: loopback only, fresh store, quiet Prefect, offline litellm."""
    env = dict(os.environ)
    env.update(
        GLOW_DATA_DIR=str(tmp),
        GLOW_DATABASE_URL=f"sqlite:///{tmp / 'glow.db'}",
        GLOW_RESULTS_DIR=str(tmp / "results"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_OFFLINE_MODE="true",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        **{workload.SIM_KEY_ENV: workload.SIM_KEY},
    )
    env.pop("INSPECT_TELEMETRY", None)
    if prefect_url:
        env["PREFECT_API_URL"] = prefect_url
    return env


def _reset_stats(sim_url: str) -> None:
    base = sim_url.removesuffix("/v1")
    httpx.post(f"{base}/stats/reset", timeout=10)


def _max_in_flight(sim_url: str) -> int | None:
    base = sim_url.removesuffix("/v1")
    stats = httpx.get(f"{base}/stats", timeout=10).json()
    models = stats.get("models") or {}
    if isinstance(models, dict):
        entry = models.get(workload.MODEL) or {}
    else:
        entry = next((m for m in models if m.get("name") == workload.MODEL), {})
    return entry.get("max_in_flight")


def run(
    *,
    cells: int,
    concurrency: int,
    latency: float,
    agent: bool,
    skip_inspect: bool,
    skip_bare: bool = False,
    skip_floor: bool = False,
    profile: str | None = None,
    keep: bool = False,
) -> list[ChildRun]:
    """Run the workload every way, print the comparison, append it to the results files."""
    tmp = Path(tempfile.mkdtemp(prefix="glow-bench-"))
    timeout = 240 + cells * (0.3 if agent else 0.15)
    runs: list[ChildRun] = []
    extra: dict[str, Any] = {"profiled": True} if profile else {}
    scenarios = workload.write_scenarios(tmp, cells=cells, agent=agent)
    turns = ["--max-turns", "3"] if agent else []
    print(
        f"workload: {cells} {'agent' if agent else 'direct'} cells, {concurrency} in flight, "
        f"{latency * 1000:.0f} ms latency; files in {tmp}"
    )
    try:
        with servers.simulator(scenarios, latency) as sim_url:
            wl = workload.write_test(
                tmp, scenarios, cells=cells, agent=agent, sim_url=sim_url, concurrency=concurrency
            )
            env = child_env(tmp, None)
            if not skip_bare:
                _reset_stats(sim_url)
                runs.append(
                    run_child(
                        "bare",
                        python(
                            "bench.child_bare",
                            "--scenarios",
                            str(scenarios),
                            "--url",
                            sim_url,
                            "--concurrency",
                            str(concurrency),
                            *turns,
                        ),
                        env=env,
                        log_dir=tmp / "logs",
                        timeout_s=timeout,
                    )
                )
                extra["bare_max_in_flight"] = _max_in_flight(sim_url)
                _print_done(runs[-1])
            if not skip_inspect:
                _reset_stats(sim_url)
                runs.append(
                    run_child(
                        "inspect",
                        python(
                            "bench.child_inspect",
                            "--scenarios",
                            str(scenarios),
                            "--url",
                            sim_url,
                            "--concurrency",
                            str(concurrency),
                            "--log-dir",
                            str(tmp / "inspect-logs"),
                            *(["--agent"] if agent else []),
                        ),
                        env=env,
                        log_dir=tmp / "logs",
                        timeout_s=timeout,
                    )
                )
                extra["inspect_max_in_flight"] = _max_in_flight(sim_url)
                _print_done(runs[-1])
            if not skip_floor:
                for name, flags in (("floor", []), ("floor-artifacts", ["--artifacts-only"])):
                    argv = ["--cells", str(cells), "--concurrency", str(concurrency), *flags]
                    floor, figures = _with_prefect(
                        name, python("bench.child_floor", *argv), tmp=tmp, timeout_s=timeout
                    )
                    runs.append(floor)
                    prefix = name.replace("-", "_")
                    extra.update({f"{prefix}_{k}": v for k, v in figures.items()})
            _reset_stats(sim_url)
            glow, figures = _with_prefect(
                "glow",
                python("bench.child_glow", "--test", str(wl.test)),
                tmp=tmp,
                timeout_s=timeout,
                profile=profile,
            )
            runs.append(glow)
            extra.update(figures)
            extra["glow_max_in_flight"] = _max_in_flight(sim_url)
        summarise(
            runs,
            cells=cells,
            concurrency=concurrency,
            latency=latency,
            agent=agent,
            extra=extra,
            skip_inspect=skip_inspect,
        )
        if profile:
            extra["profile"] = str(tmp / f"glow-profile.{profile}")
            print(f"profile: {extra['profile']}")
    finally:
        if not keep and not profile:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return runs


def _with_prefect(
    name: str, argv: list[str], *, tmp: Path, timeout_s: float, profile: str | None = None
) -> tuple[ChildRun, dict[str, Any]]:
    """Run a child against a Prefect server of its own (fresh database, started untimed) and
    charge it the server's CPU over its run and the server's catch-up after it."""
    print(f"starting a Prefect server for {name} (not timed)...", flush=True)
    t0 = time.perf_counter()
    directory = tmp / f"prefect-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with servers.prefect_server(directory) as (prefect_url, server):
        print(f"Prefect server up in {time.perf_counter() - t0:.1f}s at {prefect_url}")
        wrap = _profiler(profile, tmp) if profile else None
        server_cpu = servers.cpu_seconds(server)
        server_spy = _profile_server(server, tmp) if profile == "raw" else None
        run = run_child(
            name,
            argv,
            env=child_env(tmp, prefect_url),
            log_dir=tmp / "logs",
            timeout_s=timeout_s,
            wrap=wrap,
        )
        after = servers.cpu_seconds(server)
        if server_spy is not None:
            server_spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            server_spy.wait(60)
        if server_cpu is not None and after is not None:
            figures["prefect_server_cpu_s"] = round(after - server_cpu, 2)
        figures.update(_prefect_catch_up(run, prefect_url, server, server_cpu))
        _print_done(run)
    return run, figures


def _prefect_catch_up(
    run: ChildRun, prefect_url: str, server: psutil.Process | None, cpu_before: float | None
) -> dict[str, Any]:
    """How long after the flow ended the server took to record every task run (UI complete),
    and its CPU over the run plus that catch-up: the server's whole cost of the test."""
    flow_run_id, expected = run.report.get("flow_run_id"), run.report.get("task_runs")
    if not flow_run_id or not expected:
        return {}
    from glow.prefect_server import wait_for_task_runs

    started = time.perf_counter()
    recorded = wait_for_task_runs(prefect_url, flow_run_id, expected, timeout_s=900)
    figures: dict[str, Any] = {
        "prefect_task_runs": f"{recorded}/{expected}",
        "prefect_caught_up_s": round(time.perf_counter() - started, 2),
    }
    cpu_after = servers.cpu_seconds(server)
    if cpu_before is not None and cpu_after is not None:
        figures["prefect_server_cpu_total_s"] = round(cpu_after - cpu_before, 2)
    print(
        f"Prefect recorded {recorded}/{expected} task runs "
        f"{figures['prefect_caught_up_s']:.1f}s after the flow ended"
    )
    return figures


def _spy(*target: str, out: Path, fmt: str = "raw") -> list[str]:
    """A py-spy command line. --gil samples only the thread holding the GIL, i.e. Python CPU
    time; it is cheap, where blocking 100 Hz sampling of ~70 threads stalled the flow 3x, and it
    leaves out the threads parked on locks and pools, which py-spy otherwise reports as busy."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return [py_spy, "record", "--rate", "50", "--gil", "--nonblocking", "--format", fmt,
            "--output", str(out), *target]  # fmt: skip


def _profiler(kind: str, tmp: Path) -> list[str]:
    """py-spy over the Glow child: `raw` = collapsed stacks (for bench.profile_summary)."""
    fmt = {"raw": "raw", "svg": "flamegraph", "speedscope": "speedscope"}[kind]
    return _spy("--", out=tmp / f"glow-profile.{kind}", fmt=fmt)


def _profile_server(server: psutil.Process | None, tmp: Path) -> subprocess.Popen[bytes] | None:
    """py-spy attached to the Prefect server for the length of Glow's run (its CPU is Glow's)."""
    if server is None:
        return None
    cmd = _spy("--pid", str(server.pid), out=tmp / "prefect-server-profile.raw")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _print_done(r: ChildRun) -> None:
    state = "ok" if r.ok else f"FAILED rc={r.returncode}, see {r.log}"
    print(
        f"  {r.name}: {state}, wall {r.wall_s:.1f}s (run {r.run_wall_s or 0:.1f}s), "
        f"CPU {r.cpu_s:.1f}s, RSS {r.max_rss_mb:.0f} MB",
        flush=True,
    )
    if not r.ok and r.log and r.log.exists():
        print("    " + "\n    ".join(r.log.read_text(errors="replace").splitlines()[-15:]))


def _print_floor(
    floor: ChildRun,
    artifacts: ChildRun | None,
    bare: ChildRun,
    glow: ChildRun | None,
    *,
    cells: int,
    extra: dict[str, Any],
) -> None:
    """Prefect's own cost of a task run + keyed artifact per cell, against the bare loop: the
    lowest a/b a runner keeping those records could reach here (issue 5's 1.3x target)."""
    cores = os.cpu_count() or 1
    bare_run = bare.run_wall_s or bare.wall_s
    floor_run = floor.run_wall_s or floor.wall_s
    flow_ms = float(floor.report.get("run_cpu_s", floor.cpu_s)) / cells * 1000
    server_s = extra.get("floor_prefect_server_cpu_total_s") or extra.get(
        "floor_prefect_server_cpu_s", 0.0
    )
    server_ms = server_s / cells * 1000
    bare_ms = float(bare.report.get("run_cpu_s", bare.cpu_s)) / cells * 1000
    budget_ms = cores * 1.3 * bare_run / cells * 1000
    # Wall can't beat total CPU spread over every core, nor the one-process server's own CPU.
    lowest = max((bare_ms + flow_ms + server_ms) / cores, server_ms) * cells / 1000 / bare_run
    extra.update(
        floor_cpu_flow_ms=round(flow_ms, 2),
        floor_cpu_server_ms=round(server_ms, 2),
        bare_cpu_ms=round(bare_ms, 2),
        cpu_budget_at_1_3_ms=round(budget_ms, 2),
        lowest_reachable_a_b=round(lowest, 2),
    )
    print(
        f"Prefect's floor (no-op task run + keyed trace artifact per cell, no model, no Glow): "
        f"run {floor_run:.1f}s = {floor_run / bare_run:.2f}x the bare loop; CPU {flow_ms:.1f} ms"
        f"/cell in its process + {server_ms:.1f} ms/cell in the Prefect server"
    )
    print(
        f"CPU budget at a/b = 1.3 on {cores} cores: {budget_ms:.1f} ms/cell for everything; "
        f"the bare loop's calls take {bare_ms:.1f}, Prefect's floor {flow_ms + server_ms:.1f}: "
        f"lowest a/b reachable with a task run + artifact per cell ~ {lowest:.2f}"
    )
    if glow is not None and glow.ok and "run_cpu_s" in glow.report:
        # What Glow's own code costs: its run's CPU less the model calls (the bare loop's run)
        # and less Prefect's task run + artifact (the floor's run), all imports excluded.
        glow_ms = float(glow.report["run_cpu_s"]) / cells * 1000
        own_ms = glow_ms - bare_ms - flow_ms
        extra["glow_own_cpu_ms"] = round(own_ms, 2)
        print(
            f"Glow's run: {glow_ms:.1f} ms/cell of CPU in its process = the bare loop's calls "
            f"{bare_ms:.1f} + Prefect's floor {flow_ms:.1f} + Glow's own code {own_ms:.1f}"
        )
    if artifacts is not None and artifacts.ok:
        run_s = artifacts.run_wall_s or artifacts.wall_s
        server = extra.get("floor_artifacts_prefect_server_cpu_s") or 0.0
        print(
            f"keyed trace artifacts alone (no task runs): run {run_s:.1f}s = "
            f"{run_s / bare_run:.2f}x the bare loop; {server / cells * 1000:.1f} ms/cell of "
            "Prefect server CPU"
        )


def _ratio(a: float | None, b: float | None) -> str:
    return report.fmt(report.ratio(a, b), ".2f")


def summarise(
    runs: list[ChildRun],
    *,
    cells: int,
    concurrency: int,
    latency: float,
    agent: bool,
    extra: dict[str, Any],
    skip_inspect: bool,
) -> None:
    by = {r.name: r for r in runs}
    print()
    report.print_table(runs)
    glow, bare, insp = by.get("glow"), by.get("bare"), by.get("inspect")
    floor = cells * (2 if agent else 1) * latency / concurrency
    print(f"physical floor: {floor:.1f}s of model latency at {concurrency} in flight")
    if glow and bare:
        print(
            f"a/b (glow/bare): run {_ratio(glow.run_wall_s, bare.run_wall_s)}"
            f"  process wall {glow.wall_s / bare.wall_s:.2f}"
            f"  peak RSS {glow.max_rss_mb / bare.max_rss_mb:.2f}"
        )
        per_cell_ms = (glow.cpu_s - bare.cpu_s) / cells * 1000
        extra["glow_cpu_per_cell_ms"] = round(per_cell_ms, 2)
        server = extra.get("prefect_server_cpu_s")
        print(
            f"Glow CPU per cell beyond litellm: {per_cell_ms:.1f} ms (flow process)"
            + (
                f"; Prefect server CPU during the run {server:.1f}s "
                f"= {server / cells * 1000:.1f} ms/cell more"
                if server is not None
                else ""
            )
        )
    if glow and insp:
        print(
            f"a/c (glow/inspect): run {_ratio(glow.run_wall_s, insp.run_wall_s)}"
            f"  process wall {glow.wall_s / insp.wall_s:.2f}"
        )
    elif skip_inspect:
        print("Inspect AI skipped (--skip-inspect)")
    floor = by.get("floor")
    if floor and bare and floor.ok:
        _print_floor(floor, by.get("floor-artifacts"), bare, glow, cells=cells, extra=extra)
    same, verdict = report.compare_scores([r for r in runs if not r.name.startswith("floor")])
    print(("OK: " if same else "MISMATCH: ") + verdict)
    for key in ("bare_max_in_flight", "inspect_max_in_flight", "glow_max_in_flight"):
        if key in extra:
            print(f"{key}: {extra[key]}")
    params = {"cells": cells, "concurrency": concurrency, "latency": latency}
    if extra.get("profiled"):
        print("profiled run: figures are perturbed by py-spy and not appended")
        return
    report.append("agent" if agent else "flow", params, runs, verdict, extra)
    print(f"appended to {report.RESULTS_JSONL.name} and {report.RESULTS_MD.name}")
