"""Stopping running invocations, and keeping their leases alive, from anywhere.

`invocation_terminate` only changes the store (the API may be another process than the one
running the cell). Each process running cells keeps a watcher thread that, twice a second, asks
the store which of its running invocations were terminated, and cancels those cells' asyncio
tasks: the in-flight call is abandoned at once, its concurrency slot freed, and the cell records
itself as terminated. The same watcher renews the leases of its running cells, so a runner that
died (kill -9) is noticed when its leases run out, and a live runner's cells are never taken.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from glow.store.owner import make_owner

if TYPE_CHECKING:
    from glow.store import Store

# This process, as a lease owner: host, pid and host namespace (boot id + PID namespace) let a
# runner in the same namespace reclaim the cells of a dead one at once (glow.store.owner);
# others wait for the lease to run out.
OWNER = make_owner()
POLL_S = 0.5
RENEW_EVERY_S = 10.0
LEASE_S = 60.0


@dataclass
class Tracked:
    """A cell running in this process."""

    invocation_id: str
    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[object]
    store: Store
    terminated: bool = False


_lock = threading.Lock()
_running: dict[str, Tracked] = {}
_watcher: threading.Thread | None = None


@contextmanager
def track(invocation_id: str, store: Store) -> Iterator[Tracked]:
    """Register the current asyncio task as the one running `invocation_id`."""
    task = asyncio.current_task()
    assert task is not None, "track() runs inside a task"
    entry = Tracked(invocation_id, asyncio.get_running_loop(), task, store)
    with _lock:
        _running[invocation_id] = entry
        _ensure_watcher()
    try:
        yield entry
    finally:
        with _lock:
            if _running.get(invocation_id) is entry:
                del _running[invocation_id]


def terminate_local(invocation_id: str) -> bool:
    """Cancel the cell running `invocation_id` in this process, if any. Thread-safe."""
    with _lock:
        entry = _running.get(invocation_id)
    if entry is None:
        return False
    entry.terminated = True
    entry.loop.call_soon_threadsafe(entry.task.cancel)
    return True


def running_here() -> list[str]:
    with _lock:
        return list(_running)


def _ensure_watcher() -> None:
    global _watcher
    if _watcher is None or not _watcher.is_alive():
        _watcher = threading.Thread(target=_watch, name="glow-cancel-watcher", daemon=True)
        _watcher.start()


def _watch() -> None:
    last_renew = time.monotonic()
    while True:
        time.sleep(POLL_S)
        with _lock:
            by_store: dict[int, tuple[Store, list[str]]] = {}
            for entry in _running.values():
                by_store.setdefault(id(entry.store), (entry.store, []))[1].append(
                    entry.invocation_id
                )
        renew = time.monotonic() - last_renew >= RENEW_EVERY_S
        for store, ids in by_store.values():
            try:
                for invocation_id in store.terminated_among(ids):
                    terminate_local(invocation_id)
                if renew:
                    store.renew_leases(ids, OWNER, timedelta(seconds=LEASE_S))
            except Exception:  # noqa: BLE001, S112 - a store hiccup must not kill the watcher
                continue
        if renew:
            last_renew = time.monotonic()
