"""`python`: a Python function grades the output, for checks no declarative kind expresses.

The function is named by import path, `package.module:function` (or `module:Class.method`),
and is resolved when the rubric is loaded so a typo fails before any model is called. It is
called as `fn(output, scenario, **args)` and returns a float in 0..1, a bool, a
`(score, rationale)` pair, or a `StandardOutcome`.

It runs in a worker process, not in the grading thread, with a time limit (`timeout_s`): a
grader that loops forever is killed at the limit and its standard fails with a clear error. A
thread cannot be stopped in Python: one we merely stopped waiting for would keep a CPU and the
GIL for good, slowing every other cell. A process can be killed, and a grader that crashes its
interpreter (a segfault, `os._exit`) takes only its worker down. Workers are spawned (never
forked from a process running threads), kept and reused, so the cost is one start-up per
worker and a pipe round-trip per call; arguments and results must be picklable (a grader's
natural inputs and return shapes all are).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pydantic import Field, field_validator

from rubrics._context import GradingContext
from rubrics._outcome import StandardOutcome
from rubrics._registry import KindParams, standard_kind

DEFAULT_TIMEOUT_S = 30.0
WORKERS = max(2, os.cpu_count() or 2)  # grader processes alive at once, at most
_START_TIMEOUT_S = 120.0  # a worker's interpreter start-up (busy machines are slow)


class PythonParams(KindParams):
    function: str = Field(description="Import path module:function.")
    args: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments.")
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S,
        gt=0,
        le=3600,
        description="Longest one call may take; past it the grader is killed and the standard "
        "fails.",
    )

    @field_validator("function")
    @classmethod
    def _importable(cls, path: str) -> str:
        resolve(path)
        return path


def resolve(path: str) -> Callable[..., Any]:
    """The callable at `module:attr.attr`; ValueError saying what is wrong otherwise."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"{path!r} is not an import path of the form module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # a grader module's own import errors are the user's to see too
        raise ValueError(f"cannot import module {module_name!r} for {path!r}: {err}") from None
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ValueError(f"{path!r}: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise ValueError(f"{path!r} is not callable (it is a {type(target).__name__})")
    return target


def to_outcome(result: Any, path: str) -> StandardOutcome:
    """Accept the few return shapes a grader function naturally produces."""
    if isinstance(result, StandardOutcome):
        return result
    rationale: str | None = None
    if isinstance(result, tuple) and len(result) == 2:
        result, rationale = result
        rationale = None if rationale is None else str(rationale)
    if isinstance(result, bool):
        return StandardOutcome.of(result, rationale)
    if isinstance(result, int | float):
        if not 0 <= result <= 1:
            raise ValueError(f"{path} returned {result!r}, outside 0..1")
        return StandardOutcome(score=float(result), rationale=rationale)
    raise TypeError(
        f"{path} returned {type(result).__name__}; expected a float, a bool, "
        "(score, rationale) or StandardOutcome"
    )


class GraderTimeout(TimeoutError):
    """A python grader ran past its time limit and was killed."""


class GraderCrashed(RuntimeError):
    """A python grader's worker process died during the call."""


class GraderError(RuntimeError):
    """The grader function raised; the message carries its exception type and text."""


def _serve(conn: Connection) -> None:
    """A worker process: call graders sent over `conn` until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a worker stops
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    conn.send(("ready", None))
    while True:
        try:
            search_path, path, output, scenario, args = conn.recv()
        except (EOFError, OSError):  # the parent closed its end (or died): stop
            return
        if sys.path != search_path:  # graders import as they would in the parent
            sys.path[:] = search_path
            importlib.invalidate_caches()
        try:
            reply: tuple[str, Any] = ("ok", resolve(path)(output, scenario, **args))
            conn.send(reply)
        except BaseException as err:  # noqa: BLE001 - reported to the parent, not raised here
            conn.send(("error", f"{type(err).__name__}: {err}"))


def _exit_with_parent(parent: int) -> None:
    """Exit when the parent dies (even by SIGKILL), though a grader may be spinning: a worker
    waiting on its pipe sees the parent go, one stuck in a grader's loop would not."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


class _Worker:
    """One grader process and the parent's end of its pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child,), name="glow-python-grader", daemon=True
        )
        self.process.start()
        child.close()
        if not self.conn.poll(_START_TIMEOUT_S):
            self.kill()
            raise GraderCrashed(f"a python grader process did not start in {_START_TIMEOUT_S} s")
        self.conn.recv()

    def call(
        self, path: str, output: str | None, scenario: Any, args: dict[str, Any], limit: float
    ) -> Any:
        self.conn.send((list(sys.path), path, output, scenario, args))
        if not self.conn.poll(limit):
            self.kill()
            raise GraderTimeout(
                f"{path} took over {limit:g} s (timeout_s) and was stopped; "
                "raise timeout_s in the rubric if it legitimately needs longer"
            )
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise GraderCrashed(
                f"{path}: its process died during the call (exit code {self.process.exitcode})"
            ) from None
        if status == "error":
            raise GraderError(f"{path} raised {value}")
        return value

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class _Pool:
    """Up to WORKERS grader processes, started on first use, replaced when one is killed."""

    def __init__(self, size: int) -> None:
        self.idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(size)

    def call(
        self, path: str, output: str | None, scenario: Any, args: dict[str, Any], limit: float
    ) -> Any:
        with self.slots:  # the wait for a free worker is not part of the grader's time limit
            try:
                worker = self.idle.get_nowait()
            except queue.Empty:
                worker = _Worker()
            if not worker.process.is_alive():
                worker = _Worker()
            try:
                result = worker.call(path, output, scenario, args, limit)
            except (GraderTimeout, GraderCrashed):
                raise  # that worker was killed: the next call starts a fresh one
            except BaseException:
                self.idle.put(worker)
                raise
            self.idle.put(worker)
            return result


_POOL = _Pool(WORKERS)


@standard_kind("python", PythonParams, blocking=True)
def python(ctx: GradingContext, params: PythonParams) -> StandardOutcome:
    """Whatever the named function returns, as a 0..1 score; it also sees a None output."""
    result = _POOL.call(
        params.function, ctx.output, ctx.scenario, dict(params.args), params.timeout_s
    )
    return to_outcome(result, params.function)
