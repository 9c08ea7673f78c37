"""Start the bundled model simulator for a test that needs it, whatever runs the test.

A test file that names `${GLOW_SIMULATOR_URL}` (the quickstart) talks to the bundled simulator.
Nobody should have to start it by hand: `glow run`, `glow serve`'s invocation_run, a served
deployment and a worker-run deployment all run a flow, and the flow asks this module for the
simulator. When `GLOW_SIMULATOR_URL` is already set (a simulator the user started, or the test
suite's) it is used as it is; otherwise one `SimulatorProcess` is started for this process, shared
by every flow that needs it at the same time (reference counted) and stopped when the last one
ends.

A test record keeps the spec as it was loaded, with the simulator's address of that day in its
`api_base`s; `rebind` points those models at the simulator running now.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from glow.models import ModelSpec, TestSpec

URL_VAR = "GLOW_SIMULATOR_URL"
KEY_VAR = "GLOW_SIM_API_KEY"
# The simulator ignores keys; preflight only needs the variable to be set.
LOCAL_KEY = "sim-local-key"
_REF = re.compile(r"\$\{" + URL_VAR + r"(:-[^}]*)?\}")

_lock = threading.Lock()
_users = 0
_process: Any = None
_saved_env: dict[str, str | None] = {}


def needs_simulator(text: str) -> bool:
    """Whether a test file's text refers to the bundled simulator's address."""
    return bool(_REF.search(text))


def _file_text(path: str | Path | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return None  # the loader reports a missing file with its own message


@contextmanager
def simulator_for(path: str | Path | None) -> Iterator[str | None]:
    """Within the block, `GLOW_SIMULATOR_URL` is set if the test file at `path` needs it.

    Yields the simulator's URL, or None when the test does not use the simulator. A simulator
    this block started is stopped when the last block using it ends.
    """
    text = _file_text(path)
    if text is None or not needs_simulator(text):
        yield os.environ.get(URL_VAR)
        return
    url = _acquire()
    try:
        yield url
    finally:
        _release()


def _acquire() -> str:
    global _users, _process
    with _lock:
        if _process is None and os.environ.get(URL_VAR):
            _users += 1
            return os.environ[URL_VAR]  # a simulator someone else runs
        if _process is None:
            from glow.simulator import SimulatorProcess

            process = SimulatorProcess()
            process.start()
            _process = process
            _saved_env.clear()
            _saved_env.update({URL_VAR: os.environ.get(URL_VAR), KEY_VAR: os.environ.get(KEY_VAR)})
            os.environ[URL_VAR] = process.url
            os.environ.setdefault(KEY_VAR, LOCAL_KEY)
            print(f"started the bundled model simulator at {process.url}")
        _users += 1
        return str(_process.url)


def _release() -> None:
    global _users, _process
    with _lock:
        _users -= 1
        if _users > 0 or _process is None:
            return
        process, _process = _process, None
        for name, value in _saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    process.stop()


def _simulated_models(text: str) -> set[str]:
    """Names of the models (and judge) whose api_base is the simulator's, in a test file."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()
    if not isinstance(data, dict):
        return set()
    entries = list(data.get("models") or []) + [data.get("judge")]
    return {
        str(m.get("name"))
        for m in entries
        if isinstance(m, dict) and needs_simulator(str(m.get("api_base") or ""))
    }


def rebind(spec: TestSpec, path: str | Path | None) -> TestSpec:
    """The stored spec with its simulated models pointed at the simulator running now.

    Only models whose `api_base` is `${GLOW_SIMULATOR_URL}` in the test file change; without a
    running simulator (or a file) the spec is returned as it is.
    """
    url = os.environ.get(URL_VAR)
    text = _file_text(path)
    if not url or text is None:
        return spec
    names = _simulated_models(text)
    if not names:
        return spec

    def moved(model: ModelSpec) -> ModelSpec:
        return model.model_copy(update={"api_base": url}) if model.name in names else model

    judge = moved(spec.judge) if spec.judge is not None else None
    return spec.model_copy(update={"models": [moved(m) for m in spec.models], "judge": judge})
