"""Running the simulator: in a thread of this process, or as a subprocess under a lifeline.

`SimulatorProcess` runs `python -m glow.lifeline glow.simulator ...` and waits for the
`GLOW_SIMULATOR_URL=` line; `run_in_thread` serves it from a daemon thread. Both can be driven
over HTTP (`stats`, `reset_stats`, `set_faults`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from glow.simulator._json import dumps
from glow.simulator.app import build_app
from glow.simulator.core import Simulator
from glow.simulator.faults import FaultsArg, parse_faults
from glow.simulator.profiles import Profile, parse_profile
from glow.simulator.scenarios import PROJECT_ROOT

URL_PREFIX = "GLOW_SIMULATOR_URL="


class _Control:
    """HTTP control of a running simulator: stats and runtime faults (for tests and benches)."""

    url: str

    @property
    def base_url(self) -> str:
        """The server root (without /v1), where /health, /stats and /faults live."""
        return self.url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        """`GET /stats`: per-model requests, in flight, max in flight and faults by kind."""
        import httpx

        return httpx.get(f"{self.base_url}/stats", timeout=10).raise_for_status().json()

    def reset_stats(self) -> None:
        """`POST /stats/reset`: zero the counters, so a test phase counts only its own requests."""
        import httpx

        httpx.post(f"{self.base_url}/stats/reset", timeout=10).raise_for_status()

    def set_faults(self, faults: FaultsArg, *, replace: bool = False) -> dict[str, Any]:
        """`POST /faults`: set (None clears) models' faults; `replace` clears all others first.

        Validated here too, so a bad spec raises ValueError in the caller rather than a 400.
        """
        import httpx

        body = {m: None if f is None else f.to_json() for m, f in parse_faults(faults).items()}
        response = httpx.post(
            f"{self.base_url}/faults",
            content=dumps(body),
            params={"replace": "1"} if replace else None,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        if response.status_code == 400:
            raise ValueError(response.json()["error"]["message"])
        return response.raise_for_status().json()["faults"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound before uvicorn starts, so port 0 still tells us the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def socket_url(sock: socket.socket) -> str:
    """The `/v1` base URL (litellm's `api_base`) of a bound socket; IPv6 hosts in brackets."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def make_server(app: Starlette) -> uvicorn.Server:
    """A quiet uvicorn server for `app` (no access log: a bench sends thousands of requests)."""
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
    )
    return uvicorn.Server(config)


async def serve(server: uvicorn.Server, sock: socket.socket, on_ready: Any) -> None:
    """Serve until told to exit, calling on_ready() once uvicorn is accepting connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        on_ready()
    await task


@dataclass
class ThreadedSimulator(_Control):
    """A simulator served from a daemon thread of this process (see `run_in_thread`)."""

    url: str
    app: Starlette
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def simulator(self) -> Simulator:
        """The served `Simulator`, for tests that inspect its state directly."""
        return self.app.state.simulator

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread (in-flight requests get `timeout`)."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ThreadedSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    scenarios: str | Path | Sequence[str | Path] | None = None,
    *,
    profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
    latency: float | None = None,
    faults: str | FaultsArg | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
) -> ThreadedSimulator:
    """Start the simulator in-process (uvicorn in a daemon thread); returns once it listens.

    Handy for tests that want to inspect `.simulator` directly. Its event loop shares this
    process's GIL, so benchmarks should prefer `SimulatorProcess`. `faults`: see `Faults`.
    """
    app = build_app(scenarios, profiles, latency, faults)
    sock = bind_socket(host, port)
    server = make_server(app)
    ready = threading.Event()

    def target() -> None:
        try:
            asyncio.run(serve(server, sock, ready.set))
        finally:
            ready.set()  # also on a failed start, so the caller does not wait the full timeout

    thread = threading.Thread(target=target, name="glow-simulator", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout) or not server.started:
        server.should_exit = True
        sock.close()
        raise RuntimeError(f"simulator did not start within {startup_timeout}s")
    return ThreadedSimulator(url=socket_url(sock), app=app, server=server, thread=thread)


class SimulatorProcess(_Control):
    """The simulator as a subprocess (`python -m glow.simulator`): a context manager.

    `with SimulatorProcess() as sim:` starts it, waits for its `GLOW_SIMULATOR_URL=` line and
    exposes `sim.url` (the `/v1` base for litellm's `api_base`); leaving the block terminates it
    (SIGTERM, then a kill after `stop_timeout`). A separate process keeps the simulator's CPU off
    the caller's GIL, which matters when benchmarking the runner. `faults` (see `Faults`) are
    passed as `--faults JSON`; `set_faults()` changes them while it runs.
    """

    def __init__(
        self,
        scenarios: str | Path | Sequence[str | Path] | None = None,
        *,
        profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
        latency: float | None = None,
        faults: str | FaultsArg | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if scenarios is None:
            self.scenarios: list[str] = []
        elif isinstance(scenarios, str | Path):
            self.scenarios = [str(scenarios)]
        else:
            self.scenarios = [str(s) for s in scenarios]
        if isinstance(profiles, Mapping):
            self.profile_flags = [
                p.flag(n) if isinstance(p, Profile) else f"{n}={p}" for n, p in profiles.items()
            ]
        else:
            self.profile_flags = list(profiles or [])
        for flag in self.profile_flags:
            parse_profile(flag)  # fail here, not in the child
        self.faults = parse_faults(faults)  # likewise
        self.latency = latency
        self.host, self.port = host, port
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.env = dict(env or {})
        self.url: str = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)

    def command(self) -> list[str]:
        """`python -m glow.simulator ...` with this object's settings as flags."""
        cmd = [
            sys.executable,
            "-m",
            "glow.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        for path in self.scenarios:
            cmd += ["--scenarios", path]
        for flag in self.profile_flags:
            cmd += ["--profile", flag]
        if self.latency is not None:
            cmd += ["--latency", str(self.latency)]
        faults = {m: f.to_json() for m, f in self.faults.items() if f is not None}
        if faults:
            cmd += ["--faults", dumps(faults).decode()]
        return cmd

    def start(self) -> str:
        """Start the subprocess and return its URL once it is listening."""
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        from glow.lifeline import lifeline_popen_kwargs

        # Under `glow.lifeline`: the simulator dies with this process, even on kill -9.
        python, _, module, *args = self.command()
        self.process = subprocess.Popen(
            [python, "-m", "glow.lifeline", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            **lifeline_popen_kwargs(),
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process.stdout, lines), daemon=True).start()
        stderr_pump = threading.Thread(
            target=self._pump, args=(self.process.stderr, None), daemon=True
        )
        stderr_pump.start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                tail = self.stderr_tail()
                raise RuntimeError(
                    f"simulator printed no URL within {self.startup_timeout}s:\n{tail}"
                ) from None
            if line is None:  # stdout closed: the process died
                code = self.process.wait()
                stderr_pump.join(2.0)
                raise RuntimeError(f"simulator exited with {code}:\n{self.stderr_tail()}")
            if line.startswith(URL_PREFIX):
                self.url = line[len(URL_PREFIX) :].strip()
                return self.url

    def _pump(self, stream: Any, lines: queue.Queue[str | None] | None) -> None:
        """Drain a pipe so the child never blocks on it; stdout lines go to `lines`."""
        for line in stream:
            if lines is not None:
                lines.put(line)
            else:
                self._stderr.append(line)
        if lines is not None:
            lines.put(None)

    def stderr_tail(self) -> str:
        """The child's last stderr lines (up to 200), for the error when it fails to start."""
        return "".join(self._stderr)

    def stop(self) -> int | None:
        """Terminate (SIGTERM), wait `stop_timeout`, kill if needed; returns the exit code.

        The simulator's whole process group goes, and it goes by itself should this process
        die first (`glow.lifeline`).
        """
        from glow.lifeline import stop_group

        process, self.process = self.process, None
        if process is None:
            return None
        return stop_group(process, self.stop_timeout)

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
