"""`glow tests ...`: the command-line client of the HTTP API (`glow serve`).

    glow tests invocation <get|create|run|complete|terminate|trace|draft|drafts> --body '<json>'
    glow tests invocations --body '<json>'
    glow tests <create|get|run|list|results> --body '<json>'

Each command POSTs its body to `$GLOW_INSTANCE_URL/test/<op>` with `Authorization: Bearer
$GLOW_TOKEN` and prints the JSON answer (indented on a terminal, one line when piped). `--body`
takes JSON, `@file.json`, or `-` for stdin. Errors print the server's message and exit 1;
a server that cannot be reached exits 3 naming the URL.

Only typer, json and (lazily) urllib are imported: no prefect, litellm, httpx or SQLAlchemy,
so these commands answer in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer

DEFAULT_URL = "http://127.0.0.1:8484"

tests_app = typer.Typer(
    name="tests",
    help="Drive tests and invocations through the HTTP API ($GLOW_INSTANCE_URL, $GLOW_TOKEN).",
    no_args_is_help=True,
)
invocation_app = typer.Typer(
    name="invocation", help="One invocation: POST /test/invocation_<op>.", no_args_is_help=True
)
tests_app.add_typer(invocation_app)

BodyOption = Annotated[
    str,
    typer.Option("--body", "-b", help="JSON body; @file.json reads a file, - reads stdin."),
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="API base URL [default: $GLOW_INSTANCE_URL or " + DEFAULT_URL + "]"),
]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the answer.")]


def _die(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def read_body(raw: str) -> Any:
    """The JSON body from the option, a file (@path) or stdin (-)."""
    if raw == "-":
        text = sys.stdin.read()
    elif raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            _die(f"--body {raw}: {exc.strerror or exc}", 2)
    else:
        text = raw
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _die(f"--body is not valid JSON: {exc}", 2)


def call(op: str, body: Any, *, url: str | None = None, timeout: float = 60.0) -> Any:
    """POST the body to /test/<op>; exit with the server's message on an error.

    urllib, not httpx: one POST needs nothing more, and importing httpx would weigh on every
    `glow tests` command's start-up (figures in bench/PROFILE.md). It honours the proxy
    variables (and NO_PROXY) as httpx did.
    """
    import http.client
    import urllib.error
    import urllib.request

    base = (url or os.environ.get("GLOW_INSTANCE_URL") or DEFAULT_URL).rstrip("/")
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("GLOW_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    target = f"{base}/test/{op}"
    request = urllib.request.Request(
        target, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with _opener().open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:  # an answer, with an error status
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            _die(f"no answer from {target} within {timeout:g} s", 3)
        why = f"{type(reason).__name__}: {reason}" if isinstance(reason, Exception) else reason
        _die(
            f"cannot reach the Glow API at {base} ({why}); is "
            "`glow serve` running there? Set GLOW_INSTANCE_URL to its URL.",
            3,
        )
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if status >= 400:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            _die(f"{status} {error.get('code')}: {error.get('message')}")
        _die(f"{status} from {target}: {raw[:500].decode('utf-8', 'replace')}")
    return payload


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _opener() -> Any:
    """urllib's default opener (proxies from the environment, redirects followed), except that a
    redirect to another scheme, host or port drops the `Authorization` header: the token is for
    the Glow API it was given for, never for wherever that server (or a proxy) points next."""
    import urllib.request

    class DropTokenElsewhere(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: Any,
            code: int,
            msg: str,
            headers: Any,
            newurl: str,
        ) -> urllib.request.Request | None:
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and _origin(new.full_url) != _origin(req.full_url):
                new.remove_header("Authorization")
            return new

    return urllib.request.build_opener(DropTokenElsewhere)


def emit(payload: Any) -> None:
    if sys.stdout.isatty():
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        typer.echo(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))


def _command(app: typer.Typer, name: str, op: str, doc: str, default_body: str | None) -> None:
    def command(
        body: BodyOption = default_body or "{}",
        url: UrlOption = None,
        timeout: TimeoutOption = 60.0,
    ) -> None:
        emit(call(op, read_body(body), url=url, timeout=timeout))

    command.__doc__ = f"{doc}  (POST /test/{op})"
    app.command(name)(command)


for _name, _doc in (
    ("get", 'Hydrate one invocation: {"invocation_id": ..., "include_trace": true}.'),
    (
        "create",
        "Seed a queued invocation: a cell (test_id, scenario_id, model, agent, epoch) "
        'or {"draft_id": ...}.',
    ),
    ("run", 'Start or re-fire an invocation as a Prefect flow run: {"invocation_id": ...}.'),
    ("complete", "Mark completed, optionally with output and/or scores."),
    ("terminate", 'Terminate a running or queued invocation: {"invocation_id": ...}.'),
    (
        "trace",
        'The trace entry: {"test_id", "test_invocation_id"[, "run_id"]} or {"invocation_id"}.',
    ),
    ("draft", "Create (test_id, ...) or edit (draft_id, ...) a draft."),
    ("drafts", 'A test\'s drafts: {"test_id": ...}.'),
):
    _command(invocation_app, _name, f"invocation_{_name}", _doc, None)

_command(
    tests_app,
    "invocations",
    "invocations",
    'A page of a test\'s invocations: {"test_id", "page_size", "page_token", "status", "model"}.',
    None,
)

for _name, _doc, _default in (
    ("create", 'Create a test from a spec (JSON) or {"path": "test.yaml"} on the server.', None),
    ("get", 'A test and its invocation counts: {"test_id": ...}.', None),
    ("run", 'Start the run-test flow for a test in the background: {"test_id": ...}.', None),
    ("list", 'Tests, newest first: {"limit": 100}.', "{}"),
    ("results", 'A test\'s AggregatedResults rows: {"test_id": ..., "rebuild": false}.', None),
):
    _command(tests_app, _name, _name, _doc, _default)
