"""What a request must be before any op sees it: from a loopback name, same-origin, JSON, small.

A web page the operator visits can POST to `http://127.0.0.1:8484` (a form, or `fetch` with a
`text/plain` body, needs no CORS preflight), and DNS rebinding can make a browser send requests
for `attacker.example:8484` to 127.0.0.1. So, before the token is even looked at:

* `HostGuard`: on a loopback bind, a `Host` that is not a loopback name (127.0.0.1, localhost,
  [::1], with or without a port) is refused with 403; on any bind, an `Origin` header that is
  not the origin of the request itself (another site, or `null`) is refused with 403. Clients
  that are not browsers (curl, the CLI, httpx) send no `Origin`.
* `JsonBody` (after the token): a `/test/` body whose `Content-Type` is given and is not JSON
  (a form, text/plain, multipart) is 415; no `Content-Type` is read as JSON (`curl -d` without
  `-H` in scripts); a body over the limit (`GLOW_MAX_BODY_BYTES`) is 413, decided from
  `Content-Length` before reading, or while reading a chunked body, never after buffering it.
* `JsonRoute`: a lone surrogate in any string of a JSON body is 422 naming the field.
"""

from __future__ import annotations

import email.message
import ipaddress
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glow.api.errors import error_response

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1), brackets allowed."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host_port(value: str) -> tuple[str, str | None]:
    """`127.0.0.1:8484` -> ("127.0.0.1", "8484"), `[::1]:80` -> ("[::1]", "80"), no port -> None."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1 :]
        return value[: end + 1], (rest[1:] if rest.startswith(":") else None)
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class HostGuard:
    """ASGI middleware: refuse a non-loopback `Host` (on a loopback bind) and a cross-site `Origin`.

    `loopback_only` is true when the server listens on a loopback address: every legitimate
    client then names a loopback host, and anything else is DNS rebinding or a mistake.
    """

    def __init__(self, app: ASGIApp, loopback_only: bool = True) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is not None:
            await error_response(403, problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def problem(self, scope: Scope) -> str | None:
        """Why the request is refused, or None."""
        host = _header(scope, b"host")
        if self.loopback_only:
            name, port = split_host_port(host or "")
            if not host or not is_loopback(name) or (port is not None and not port.isdigit()):
                return (
                    f"Host {host!r} is not a loopback name: this server listens on loopback "
                    "only; call it as http://127.0.0.1:<port> (or localhost, [::1])"
                )
        origin = _header(scope, b"origin")
        if origin is not None:
            parts = urlsplit(origin)
            same = (
                parts.scheme in ("http", "https")
                and host is not None
                and parts.netloc.lower() == host.strip().lower()
                and not parts.path.strip("/")
            )
            if not same:
                return (
                    f"cross-site request refused: Origin {origin!r} is not this server "
                    f"({host!r}); the API is not for web pages of other sites"
                )
        return None


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class JsonBody:
    """ASGI middleware: `/test/` bodies are JSON (415 otherwise) and at most `limit` bytes (413).

    The body is read here, counted as it arrives, and replayed to the app: an oversized body is
    refused as soon as its `Content-Length` (or the bytes read so far) pass the limit, so a
    60 MB body costs at most the limit in memory, not the whole body several times over.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def too_large(self) -> str:
        return (
            f"the body is larger than {self.limit} bytes (GLOW_MAX_BODY_BYTES); for a test with "
            'many inline scenarios, put them in a file and create it with {"path": ...}'
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        if str(scope.get("path", "")).startswith("/test/"):
            content_type = _header(scope, b"content-type")
            if content_type is None:
                # No type at all (a bare POST from a script): every op takes JSON, so read it
                # as JSON. A browser's cross-site POST always carries a type, refused below.
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
            elif not _is_json(content_type):
                await error_response(
                    415,
                    f"Content-Type {content_type!r} is not JSON: send the body as application/json",
                )(scope, receive, send)
                return
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            await error_response(413, self.too_large())(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        last: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it too
                last = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await error_response(413, self.too_large())(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                if last is not None:
                    return last
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def surrogate_path(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first lone surrogate (`"\\ud800"` in JSON) sits in parsed JSON, or None.

    Python's JSON parser accepts them, but no store, log or file can encode them: caught here,
    one check for every string of every body (keys too), instead of a 500 deep in an op.
    """
    if isinstance(value, str):
        return None if _encodable(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                return (*path, key.encode("utf-8", "backslashreplace").decode())
            found = surrogate_path(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = surrogate_path(item, (*path, index))
            if found is not None:
                return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JsonRoute(APIRoute):
    """A route whose JSON body is refused (422, naming the field) if a string holds a lone
    surrogate, before the op's schema or the op itself sees it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if await request.body():
                try:
                    data = await request.json()  # cached: FastAPI's own read reuses it
                except ValueError:
                    data = None  # malformed JSON: FastAPI answers it (400)
                where = surrogate_path(data)
                if where is not None:
                    raise RequestValidationError(
                        [
                            {
                                "type": "string_unicode",
                                "loc": ("body", *where),
                                "msg": "a lone surrogate (e.g. \\ud800) is not valid text; "
                                "send UTF-8 text",
                                "input": None,
                            }
                        ]
                    )
            return await handler(request)

        return checked
