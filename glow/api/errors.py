"""One error shape for every failure, and the bearer-token check.

Every error is `{"error": {"code": ..., "message": ...}}`: malformed JSON 400, a missing or
wrong token 401 (nothing else said), a foreign Host or cross-site Origin 403, an unknown id 404,
a refused transition 409 naming the current status, a body over the size limit 413, a body that
is not JSON 415, a body that fails validation 422 naming the field. Nothing a client sends may
produce a 500; the catch-all below is the last resort, and says nothing about internals.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from glow.errors import BudgetExhausted, GlowError, NotFound, SpecError, TransitionError

log = logging.getLogger("glow.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
}


class ApiError(Exception):
    """An error raised by an op with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    code = _CODES.get(status, "error")
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _field(loc: tuple[Any, ...]) -> str:
    # "body" and a union's member tags ("@spec") are where the value sits, not its field.
    parts = [p for p in loc if p != "body" and not (isinstance(p, str) and p.startswith("@"))]
    dotted = ""
    for part in parts:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    return dotted or "body"


def validation_message(errors: list[dict[str, Any]]) -> str:
    """`field.path: message; ...`, the field named first so a user can fix it."""
    lines = []
    for problem in errors[:10]:
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        if problem.get("type") == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{_field(tuple(problem.get('loc', ())))}: {message}")
    return "; ".join(lines)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            where = next(e for e in errors if e.get("type") == "json_invalid")
            ctx = where.get("ctx") or {}
            return error_response(400, f"malformed JSON body: {ctx.get('error', 'invalid')}")
        return error_response(422, validation_message(errors))

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(GlowError)
    async def _glow(_: Request, exc: GlowError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return error_response(404, str(exc))
        if isinstance(exc, TransitionError | BudgetExhausted):
            return error_response(409, str(exc))
        if isinstance(exc, SpecError):
            return error_response(422, str(exc))
        return error_response(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s", request.url.path)
        return error_response(500, "internal error; the server log has the details")


class BearerAuth:
    """ASGI middleware: every /test/ op needs `Authorization: Bearer <token>`.

    Checked before the body is read, so an unauthenticated caller learns nothing (not even
    whether its JSON was valid). The comparison is constant-time. With no token the server is
    open (allowed only on loopback; `glow serve --open`).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/test/"):
            await self.app(scope, receive, send)
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "missing or invalid bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
