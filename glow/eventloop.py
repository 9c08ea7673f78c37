"""The event loop Glow's own entry points run a test's coroutines on: uvloop where it exists.

A test's cells all share one asyncio loop (`flows.run_test`), and on two cores the loop's own
machinery (callbacks, selector, futures) was about a sixth of the flow process's CPU in bench/
(PROFILE.md). uvloop runs that machinery in C: a 1,000-cell test took ~8% less wall time. It is
what `glow serve` already runs on (uvicorn picks it). Windows has no uvloop: asyncio's loop there.

Only the loops Glow creates use it (`glow run`, `glow regrade`, the bench); no global policy is
set, so a library or test that makes its own loop gets asyncio's as usual. A deployment run's
loop is Prefect's (`prefect flow-run execute` calls `asyncio.run`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
