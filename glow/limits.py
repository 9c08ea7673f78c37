"""In-process concurrency limits: each model's max in flight, shared by all cells of a test.

Adaptive: a 429 halves the slots a model may use (at most once a second, so one burst counts
once), and each run of successes as long as the current limit gives one back, up to the
model's `max_in_flight`. Sustained rate limiting thus slows a test down instead of spending its
retries; a provider that recovers gets the full concurrency again.

A slot is held only while a request is on the wire, not while a retry waits, so backoff never
starves the other cells of a model. Cells usually share one event loop, but grading threads,
`call_model` (one `asyncio.run` per call) and the API's background runs bring other loops and
threads; so a slot is a thread-safe counter whose waiters are futures of their own loops, not
an asyncio.Semaphore (which belongs to one loop and would give each loop its own limit).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any


class _Slots:
    """At most `limit` holders at once, across threads and event loops, first come first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.allowed = limit  # the adaptive limit, 1..limit
        self.held = 0
        self._successes = 0
        self._last_cut = 0.0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.held < self.allowed and not self._waiters:
                self.held += 1
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove((loop, future))
                    handed_over = False
                except ValueError:
                    handed_over = True
            # Handed over and granted before the cancel landed: the slot is ours to give back.
            # Handed over but not yet granted: `_grant` sees the cancelled future and passes it on.
            if handed_over and future.done() and not future.cancelled():
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            if not self._waiters or self.held > self.allowed:
                self.held -= 1
                return
            # The slot passes straight to the next waiter: `held` stays the same.
            loop, future = self._waiters.popleft()
        loop.call_soon_threadsafe(self._grant, future)

    def rate_limited(self) -> None:
        """A 429: halve the allowed slots (once per second at most)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_cut >= 1.0 and self.allowed > 1:
                self.allowed = max(1, self.allowed // 2)
                self._last_cut = now
            self._successes = 0

    def succeeded(self) -> None:
        """An answer: after `allowed` answers in a row, give one slot back."""
        woken = []
        with self._lock:
            if self.allowed >= self.limit:
                return
            self._successes += 1
            if self._successes < self.allowed:
                return
            self._successes = 0
            self.allowed += 1
            while self._waiters and self.held < self.allowed:
                self.held += 1
                woken.append(self._waiters.popleft())
        for loop, future in woken:
            loop.call_soon_threadsafe(self._grant, future)

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():  # cancelled after it was popped: its slot goes to the next one
            self.release()
        else:
            future.set_result(None)


_lock = threading.Lock()
_slots: dict[tuple[str, str], _Slots] = {}


class ModelSlot:
    """Calling it gives an async context manager that holds one of the model's slots."""

    def __init__(self, slots: _Slots) -> None:
        self.slots = slots

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        await self.slots.acquire()
        try:
            yield
        finally:
            self.slots.release()

    def rate_limited(self) -> None:
        self.slots.rate_limited()

    def succeeded(self) -> None:
        self.slots.succeeded()


def model_slot(
    scope: str, model: str, limit: int | None
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """A factory of async context managers bounding concurrent calls of `model` in `scope`."""
    if limit is None:
        return nullcontext
    with _lock:
        slots = _slots.get((scope, model))
        if slots is None or slots.limit != limit:
            slots = _slots[(scope, model)] = _Slots(limit)
    return ModelSlot(slots)


def provider_limit_name(provider: str) -> str:
    """The Prefect global concurrency limit shared by every test calling `provider`."""
    return "glow-provider-" + "".join(c if c.isalnum() else "-" for c in provider.lower())


async def ensure_provider_limits(limits: dict[str, int]) -> None:
    """Create or resize the global concurrency limits a test names (`provider_limits`)."""
    if not limits:
        return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        for provider, limit in limits.items():
            name = provider_limit_name(provider)
            try:
                await client.upsert_global_concurrency_limit_by_name(name, limit)
            except ObjectAlreadyExists:
                # Two tests starting together both saw no limit and both created it;
                # the loser resizes the winner's limit instead.
                await client.upsert_global_concurrency_limit_by_name(name, limit)


def provider_slot(provider: str | None) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """A slot of the provider's strict Prefect global concurrency limit (or none)."""
    if provider is None:
        return nullcontext
    from prefect.concurrency.asyncio import concurrency

    name = provider_limit_name(provider)
    # strict: a limit deleted under a running test fails its calls rather than lifting the cap.
    return lambda: concurrency(name, occupy=1, strict=True)
