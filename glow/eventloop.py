"""How Glow's own entry points run a test's coroutines: on uvloop, with the GC tuned for it.

A test's cells all share one asyncio loop (`flows.run_test`), and the loop's own machinery
(callbacks, selector, futures) is a visible share of the flow process's CPU (bench/PROFILE.md).
uvloop runs that machinery in C. It is what `glow serve` already runs on (uvicorn picks it).
Windows has no uvloop: asyncio's loop there.

The garbage collector: by the time a test starts, the imports (Prefect, litellm, pydantic
models) have left hundreds of thousands of objects that live as long as the process, and each
full collection would walk all of them again, while the default young generation threshold (700
allocations) runs many small collections. So what exists at the start is frozen and the young
generation is collected every 10,000 allocations (figures in bench/PROFILE.md). Both are undone
when the run ends, so a caller that runs several tests (the test suite) collects as before in
between.

Only the loops Glow creates use this (`glow run`, `glow regrade`, the bench); no global policy
is set, so a library or test that makes its own loop gets asyncio's as usual. A deployment run's
loop is Prefect's (`prefect flow-run execute` calls `asyncio.run`).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

YOUNG_THRESHOLD = 10_000


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it
        return asyncio.new_event_loop
    return uvloop.new_event_loop


@contextmanager
def long_run_gc() -> Iterator[None]:
    """Freeze the objects alive now and collect the young generation less often, until exit."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop when it is installed, under `long_run_gc`."""
    with long_run_gc(), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
