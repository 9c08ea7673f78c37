"""In-process concurrency limits: each model's max in flight, shared by all cells of a process.

A slot is held only while a request is on the wire, not while a retry waits, so backoff never
starves the other cells of a model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

_lock = threading.Lock()
_semaphores: dict[tuple[str, str], threading.BoundedSemaphore] = {}


def model_slot(scope: str, model: str, limit: int | None) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of context managers that bound concurrent calls of `model` within `scope`."""
    if limit is None:
        return nullcontext
    with _lock:
        semaphore = _semaphores.setdefault((scope, model), threading.BoundedSemaphore(limit))
    return lambda: semaphore
