"""`glow serve`: the HTTP API (glow.api) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from glow.cli.common import app, fail, quiet_prefect


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8484,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="GLOW_TOKEN", show_envvar=True, help="Bearer token every request must carry."
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Run without a token (loopback hosts only).")
    ] = False,
) -> None:
    """Serve the HTTP API (POST /test/<op>); starts an embedded Prefect server if none is set."""
    from glow.api.guard import is_loopback

    if open_ and not is_loopback(host):
        fail(
            f"--open is allowed only on a loopback host (127.0.0.1, localhost, ::1), not {host}: "
            "anyone who can reach it could run tests; give a token (GLOW_TOKEN) instead"
        )
    if not token and not open_:
        fail(
            "refusing to start without a token: pass --token or set GLOW_TOKEN "
            "(or --open on a loopback host)"
        )
    quiet_prefect()
    from glow.api import serve as serve_api

    serve_api(host, port, token or None)
