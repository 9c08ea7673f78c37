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


class Milestones:
    """Progress lines for a log: one each time another 1/`parts` of the cells is done, with the
    statuses seen so far, so a flow run's log tells how far a test is without flooding it
    (`parts` lines for a test of any size)."""

    def __init__(self, total: int, done: int = 0, parts: int = 10) -> None:
        self.total = total
        self.parts = parts
        self.counts: dict[str, int] = {}
        self._next = self._after(done)

    def _after(self, done: int) -> int:
        """The count of done cells at which the next line is due: ceil(k * total / parts) for
        the first milestone k past `done` (integers: 30% of 140 is 42, not 43)."""
        if self.total <= 0:
            return 1
        reached = done * self.parts // self.total
        return -(-(reached + 1) * self.total // self.parts)

    def update(self, done: int, status: str) -> str | None:
        """Record one finished cell (`done` cells now); the line to log, or None."""
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.total <= 0 or done < self._next:
            return None
        self._next = self._after(done)
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"{done}/{self.total} cells ({100 * done // self.total}%): {statuses}"
