"""The simulator's ASGI app (Starlette): chat completions, models, health, stats and faults.

A chat completion draws its fault, waits its profile's latency, then answers (JSON or SSE);
the faults that act on the connection itself (a TCP reset, a hang) are here too.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from glow.simulator._json import loads
from glow.simulator.core import ModelStats, Simulator
from glow.simulator.faults import Faults, FaultsArg, parse_faults
from glow.simulator.profiles import Profile, resolve_profiles
from glow.simulator.replies import word_count
from glow.simulator.responses import (
    error_response,
    fault_response,
    json_response,
    sse,
    sse_chunk_count,
)
from glow.simulator.scenarios import load_scenarios

_TRANSPORT = "glow.simulator.transport"  # scope key: the connection's asyncio transport


class _SimulatorApp(Starlette):
    """Starlette, plus the connection's transport in the scope so a fault can reset it.

    uvicorn passes its per-request `send` (a bound method of the request cycle, which holds the
    transport) straight to the app; Starlette's own middleware wraps it, so it is caught here.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if isinstance(transport, asyncio.Transport):
                scope = {**scope, _TRANSPORT: transport}
        await super().__call__(scope, receive, send)


class _NoResponse(Response):
    """What an endpoint returns once the connection is gone: nothing is sent."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


async def _broken_body() -> AsyncIterator[bytes]:
    """A body that fails after the headers: the server then closes the connection mid-response."""
    yield b'{"id": "chatcmpl-reset", "choices": ['
    raise ConnectionResetError("glow simulator: injected connection reset")


async def _reset(request: Request) -> Response:
    """Abort the connection with a TCP RST and no response (falls back to a cut-off body)."""
    transport = request.scope.get(_TRANSPORT)
    if not isinstance(transport, asyncio.Transport):
        return StreamingResponse(_broken_body(), media_type="application/json")
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST instead of FIN, like a crashed peer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)  # uvicorn marks the request disconnected, so it logs nothing
    return _NoResponse()


async def _hang(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client disconnects (returns True): a hung provider."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(0.05, left))
        if await request.is_disconnected():
            return True
    return False


def create_app(simulator: Simulator) -> Starlette:
    """The ASGI app serving `simulator`: chat completions, models, health, stats and faults."""

    async def chat_completions(request: Request) -> Response:
        try:
            body = loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            return error_response(400, f"invalid JSON body: {exc}", None)
        model = str(body.get("model") or "")
        found = simulator.profile_for(model)
        if found is None:
            simulator.unknown_model_requests += 1
            return error_response(404, f"The model `{model}` does not exist.", "model_not_found")
        name, profile = found
        stats = simulator.stats[name]
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                stats.in_flight -= 1

        response: Response | None = None
        try:
            response = await answer(request, body, model, name, profile, stats, release)
            return response
        finally:
            # A streamed answer stays in flight until its last chunk (its body releases);
            # everything else, faults on stream requests included, ends here.
            if not isinstance(response, StreamingResponse) or response.background is None:
                release()

    async def answer(
        request: Request,
        body: dict[str, Any],
        model: str,
        name: str,
        profile: Profile,
        stats: ModelStats,
        release: Callable[[], None],
    ) -> Response:
        """One chat completion, with the fault drawn for it (if any) injected."""
        drawn = simulator.draw_fault(name, body)
        kind, faults = drawn if drawn is not None else (None, Faults())
        if kind is not None:
            stats.faults[kind] += 1
        if kind == "hang":
            if await _hang(request, faults.hang_s):
                return _NoResponse()
        else:
            delay = profile.draw_latency(simulator.rng)
            if delay:
                await asyncio.sleep(delay)
        if kind == "reset":
            return await _reset(request)
        if kind is not None and (error := fault_response(kind, faults, request)) is not None:
            return error
        reply = simulator.reply(name, profile, body)
        messages = body.get("messages") or []
        prompt_tokens = int(word_count([m for m in messages if isinstance(m, dict)]) * 1.3)
        completion_tokens = int(reply.word_count() * 1.3)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": model,
        }
        chunk_delay = faults.stream_chunk_delay_s if kind == "slow_stream" else 0.0
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                sse(head, reply, usage if include_usage else None, chunk_delay, release),
                media_type="text/event-stream",
                background=BackgroundTask(release),
            )
        if chunk_delay:  # a slow stream asked for without streaming: the same total wait
            await asyncio.sleep(chunk_delay * sse_chunk_count(reply))
        if kind == "malformed":
            return Response(
                b'{"id": "' + head["id"].encode() + b'", "object": "chat.completion", '
                b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "Ans',
                media_type="application/json",
            )
        choices = [{"index": 0, "message": reply.message(), "finish_reason": reply.finish_reason}]
        return json_response(
            {
                **head,
                "object": "chat.completion",
                "choices": [] if kind == "empty" else choices,
                "usage": usage,
            }
        )

    async def models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "glow-simulator"}
            for name in simulator.profiles
        ]
        return json_response({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return json_response(
            {
                "status": "ok",
                "scenarios": len(simulator.by_text),
                "models": list(simulator.profiles),
            }
        )

    async def stats(request: Request) -> Response:
        return json_response(simulator.stats_json())

    async def reset(request: Request) -> Response:
        simulator.reset_stats()
        return json_response(simulator.stats_json())

    async def get_faults(request: Request) -> Response:
        return json_response({"faults": simulator.faults_json()})

    async def post_faults(request: Request) -> Response:
        """Set models' faults: `{"model": spec | null, "*": spec}`; `?replace=1` clears the rest."""
        try:
            spec = loads(await request.body())
            replace_all = request.query_params.get("replace", "").lower() in ("1", "true", "yes")
            simulator.set_faults(spec, replace_all=replace_all)
        except ValueError as exc:
            return error_response(400, f"faults: {exc}", None)
        return json_response({"faults": simulator.faults_json()})

    async def delete_faults(request: Request) -> Response:
        simulator.set_faults({}, replace_all=True)
        return json_response({"faults": {}})

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/reset", reset, methods=["POST"]),
        Route("/faults", get_faults, methods=["GET"]),
        Route("/faults", post_faults, methods=["POST"]),
        Route("/faults", delete_faults, methods=["DELETE"]),
    ]
    app = _SimulatorApp(routes=routes)
    app.state.simulator = simulator
    return app


def build_app(
    scenarios: str | Path | Sequence[str | Path] | None = None,
    profiles: Mapping[str, Profile | str] | Iterable[str] | None = None,
    latency: float | None = None,
    faults: str | FaultsArg | None = None,
) -> Starlette:
    """Load scenarios, resolve profiles and faults; the ASGI app (state: `app.state.simulator`)."""
    simulator = Simulator(
        load_scenarios(scenarios), resolve_profiles(profiles, latency), faults=parse_faults(faults)
    )
    return create_app(simulator)
