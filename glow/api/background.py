"""Running Prefect flows in the background of the API server.

The flow run is created first through the Prefect API (so its id goes back in the response at
once), then carried out by Prefect's own engine in this process: the user sees it in the Prefect
UI like any other run, with its task runs and artifacts. Prefect is imported here lazily, after
the server has chosen its Prefect API (embedded or configured).

All flows started here share ONE event loop in one background thread, like the cells of a
`run-test` flow: each model's `max_in_flight` (an asyncio semaphore per loop, `glow.limits`) then
holds across every invocation the API runs, and a terminated cell's slot goes to the next.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("glow.api")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_pending: set[Any] = set()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="glow-flows", daemon=True).start()
            _loop = loop
        return _loop


def start_flow(
    flow: Any,
    parameters: dict[str, Any],
    *,
    name: str | None = None,
    on_crash: Callable[[BaseException], None] | None = None,
) -> str:
    """Create a flow run, start it on the shared loop, and return its id (an async flow)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(flow, name=name, parameters=parameters)
    future = asyncio.run_coroutine_threadsafe(
        _carry_out(flow, flow_run, parameters, on_crash), _shared_loop()
    )
    _pending.add(future)
    future.add_done_callback(_pending.discard)
    return str(flow_run.id)


async def _carry_out(
    flow: Any,
    flow_run: Any,
    parameters: dict[str, Any],
    on_crash: Callable[[BaseException], None] | None,
) -> None:
    from prefect.flow_engine import run_flow

    try:
        await run_flow(flow, flow_run=flow_run, parameters=parameters, return_type="state")
    except BaseException as exc:  # noqa: BLE001 - a crashed flow must not take the server down
        log.exception("flow run %s crashed", flow_run.id)
        if on_crash is not None:
            try:
                await asyncio.to_thread(on_crash, exc)
            except Exception:  # noqa: BLE001
                log.exception("cleanup after flow run %s failed", flow_run.id)


def running_flows() -> int:
    return sum(not f.done() for f in list(_pending))
