"""Progress of a running test, for whoever is watching in this process (the CLI's bar).

The flow emits; listeners subscribe. Prefect parameters must be serialisable, so a callback
cannot be passed to the flow: this tiny registry is the side door.
"""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[int, int, str], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(done: int, total: int, status: str) -> None:
    for listener in list(_listeners):
        listener(done, total, status)
