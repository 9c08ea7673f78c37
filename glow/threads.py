"""Glow's own worker threads, kept apart from asyncio's default executor.

litellm's `acompletion` builds each request in the loop's default executor (6 threads on two
cores). Blocking work of Glow's that ran there too queued in front of the model calls, and
judged grading, which blocks on a judge call it hands back to the loop, deadlocked it outright.
So that work runs on pools of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Judged grading blocks for a whole judge call: one thread per cell that may be grading at once.
GRADING = ThreadPoolExecutor(max_workers=64, thread_name_prefix="glow-grade")
# Store calls: SQLite takes one writer at a time, so a few threads are plenty.
STORE = ThreadPoolExecutor(max_workers=8, thread_name_prefix="glow-store")


async def run_in(pool: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """`asyncio.to_thread` on `pool` (the caller's context variables go along, as there)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
