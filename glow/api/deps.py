"""What every op shares: the store of the running app, and the documented error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from glow.api.schemas import ErrorResponse
from glow.store import Store

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "Malformed JSON body."),
        (401, "Missing or invalid bearer token."),
        (404, "Unknown id."),
        (409, "The lifecycle does not allow this transition; the message names the status."),
        (422, "The body failed validation; the message names the field."),
    )
}


async def get_store(request: Request) -> Store:
    """The app's store. Async on purpose: FastAPI runs a sync dependency in a worker thread,
    a thread hand-off per request for one attribute read."""
    return request.app.state.store  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
