"""The HTTP API of `glow serve`: every op is `POST /test/<op>` with a JSON body.

Invocation ops (`invocation_get`, `invocation_create`, `invocation_run`, `invocation_complete`,
`invocation_terminate`, `invocation_trace`, `invocation_draft`, `invocations`,
`invocation_drafts`) and the test-level ops around them (`create`, `get`, `run`, `list`,
`results`). `GET /openapi.json` documents each with its request and response schema, `/docs`
renders it. See docs/api.md.

Prefect is not imported until the server has chosen its Prefect API: the configured
`PREFECT_API_URL`, or an embedded server it starts once (Prefect reads its settings at import).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from glow.api.errors import BearerAuth, error_response, install_error_handlers, validation_message
from glow.api.guard import HostGuard, JsonBody, is_loopback
from glow.store import Store

log = logging.getLogger("glow.api")


def create_app(
    token: str | None,
    store: Store | None = None,
    *,
    prefect: bool = True,
    loopback_only: bool = True,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The API app. `token` None means open (the caller checks it is on loopback).

    `loopback_only` (the server listens on a loopback address) refuses any request whose `Host`
    is not a loopback name; `max_body_bytes` defaults to the `GLOW_MAX_BODY_BYTES` setting.
    """
    from glow.settings import get_settings

    limit = max_body_bytes or get_settings().max_body_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            app.state.store = store or Store.from_settings()
            if prefect:
                from glow.prefect_server import embedded_prefect

                embedded = not os.environ.get("PREFECT_API_URL")
                log_path = get_settings().data_dir / "prefect-server.log"
                if embedded:
                    log.info("starting an embedded Prefect server (~15 s; log: %s)", log_path)
                app.state.prefect_url = stack.enter_context(embedded_prefect(log_path))
                import flows.single_invocation  # noqa: F401 - warm: the first run answers fast

                log.info("Prefect API: %s", app.state.prefect_url)
            yield

    app = FastAPI(
        title="Glow API",
        version="1",
        summary="Drive a test's invocations: every op is POST /test/<op> with a JSON body.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.exception_handler(ValidationError)
    async def _invalid_model(_: Any, exc: ValidationError) -> Any:
        return error_response(422, validation_message(list(exc.errors())))

    from glow.api import invocations, tests

    app.include_router(invocations.router)
    app.include_router(tests.router)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # Outermost last: Host/Origin, then the token, then the body's type and size, then the
    # fast page path. A stranger learns nothing, and no body is read before the token passed.
    app.add_middleware(invocations.InvocationPages)
    app.add_middleware(JsonBody, limit=limit)
    app.add_middleware(BearerAuth, token=token)
    app.add_middleware(HostGuard, loopback_only=loopback_only)
    _document_auth(app)
    return app


def _document_auth(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI document (clients and schemathesis read it)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve(host: str, port: int, token: str | None) -> None:
    """Run the API under uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    app = create_app(token, loopback_only=is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level="info")
