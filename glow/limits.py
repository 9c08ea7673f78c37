"""In-process concurrency limits: each model's max in flight, shared by all cells of a test.

A slot is held only while a request is on the wire, not while a retry waits, so backoff never
starves the other cells of a model. Cells run on one event loop, so asyncio semaphores suffice;
they are keyed by loop as well, since an asyncio primitive belongs to the loop that uses it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

_lock = threading.Lock()
_semaphores: dict[tuple[int, str, str], asyncio.Semaphore] = {}


def model_slot(
    scope: str, model: str, limit: int | None
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """A factory of async context managers bounding concurrent calls of `model` in `scope`."""
    if limit is None:
        return nullcontext

    def slot() -> AbstractAsyncContextManager[Any]:
        key = (id(asyncio.get_running_loop()), scope, model)
        with _lock:
            semaphore = _semaphores.get(key)
            if semaphore is None:
                semaphore = _semaphores[key] = asyncio.Semaphore(limit)
        return semaphore

    return slot
