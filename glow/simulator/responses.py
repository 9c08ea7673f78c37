"""OpenAI-shaped responses: JSON and error bodies, the status-code faults, the SSE stream.

Bodies follow OpenAI's shapes (and a proxy's HTML for 502) because litellm and the openai SDK
decide what to retry and what to raise from them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from glow.simulator._json import dumps
from glow.simulator.faults import Faults, retry_after_headers
from glow.simulator.replies import Reply


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`obj` as an `application/json` response."""
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(
    status: int,
    message: str,
    code: str | None,
    kind: str = "invalid_request_error",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An OpenAI-style error body."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json_response({"error": error}, status, headers)


BAD_GATEWAY_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


def fault_response(kind: str, faults: Faults, request: Request) -> Response | None:
    """The error response for a status-code fault kind, else None (the kind shapes a reply)."""
    if kind == "429":
        return error_response(
            429,
            "Rate limit reached for requests. Please try again later.",
            "rate_limit_exceeded",
            "requests",
            headers=retry_after_headers(faults),
        )
    if kind == "429_no_retry_after":
        return error_response(
            429, "Rate limit reached for requests.", "rate_limit_exceeded", "requests"
        )
    if kind == "500":
        return error_response(
            500, "The server had an error while processing your request.", None, "server_error"
        )
    if kind == "502":
        return Response(BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
    if kind == "503":
        return error_response(
            503,
            "The engine is currently overloaded, please try again later.",
            None,
            "server_error",
        )
    if kind == "401":
        # Real providers echo the key they were given (OpenAI masks its middle; the worst case
        # is the whole key), so a client must mask its key in every error it records.
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip() or request.headers.get("api-key", "")
        return error_response(
            401,
            f"Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_api_key",
        )
    if kind == "400":
        return error_response(
            400,
            "Invalid value for 'temperature': simulated bad request.",
            "invalid_value",
            param="temperature",
        )
    if kind == "context":
        return error_response(
            400,
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9001 tokens. Please reduce the length of the messages.",
            "context_length_exceeded",
            param="messages",
        )
    return None


def sse_chunk_count(reply: Reply) -> int:
    """How many chunks `sse` sends for `reply` (role, content pieces or tool call, finish)."""
    if reply.tool_call:
        return 3
    return 2 + math.ceil(len((reply.content or "").split(" ")) / 4)


async def sse(
    head: dict[str, Any],
    reply: Reply,
    usage: dict[str, int] | None,
    chunk_delay_s: float = 0.0,
    on_end: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The reply as OpenAI `chat.completion.chunk` server-sent events, ending with [DONE].

    `chunk_delay_s` waits before each chunk (a slow stream); `on_end()` runs when it stops.
    """
    try:
        async for chunk in _sse_events(head, reply, usage):
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
            yield chunk
    finally:
        if on_end is not None:
            on_end()


async def _sse_events(
    head: dict[str, Any], reply: Reply, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    if reply.tool_call:
        yield event({"tool_calls": [{"index": 0, **reply.tool_call}]})
    else:
        words = (reply.content or "").split(" ")
        for i in range(0, len(words), 4):
            piece = " ".join(words[i : i + 4])
            yield event({"content": piece if i == 0 else " " + piece})
    yield event({}, reply.finish_reason)
    if usage is not None:
        yield (
            b"data: "
            + dumps({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            + b"\n\n"
        )
    yield b"data: [DONE]\n\n"
