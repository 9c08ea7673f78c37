"""`glow tests ...` as a user runs it: a subprocess against a real `glow serve`, reading
GLOW_INSTANCE_URL and GLOW_TOKEN; the seed's CLI examples as written; fast (no prefect, litellm
or SQLAlchemy imported); clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import api_harness
import pytest
from api_harness import Api, free_port
from conftest import ROOT

pytestmark = pytest.mark.usefixtures("prefect_server")
api = api_harness.api  # the module-scoped `glow serve` fixture


def glow(
    api: Api, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glow.cli", *args],
        input=stdin,
        env=env or api.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(api: Api, *args: str, stdin: str | None = None) -> Any:
    done = glow(api, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert done.stdout.count("\n") == 1  # piped: compact, one line
    return json.loads(done.stdout)


def test_every_command_against_the_server(api: Api) -> None:
    spec = api.spec("cli", scenarios=2)
    spec_file = api.home / "cli.json"
    spec_file.write_text(json.dumps(spec))
    test_id = ok(api, "tests", "create", "--body", f"@{spec_file}")["test"]["test_id"]
    assert ok(api, "tests", "get", "--body", json.dumps({"test_id": test_id}))["counts"] == {
        "queued": 4
    }
    assert test_id in [t["test_id"] for t in ok(api, "tests", "list")["tests"]]
    rows = ok(
        api,
        "tests",
        "invocations",
        "--body",
        "-",
        stdin=json.dumps({"test_id": test_id, "model": "strong"}),
    )["invocations"]
    inv_id = rows[0]["invocation_id"]

    started = ok(api, "tests", "invocation", "run", "--body", json.dumps({"invocation_id": inv_id}))
    assert started["status"] == "running" and started["flow_run_id"]
    assert api.wait_status(inv_id, {"completed", "failed"})["status"] == "completed"
    got = ok(api, "tests", "invocation", "get", "--body", json.dumps({"invocation_id": inv_id}))
    assert got["runs"][0]["trace"]
    trace = ok(
        api,
        "tests",
        "invocation",
        "trace",
        "--body",
        json.dumps({"test_id": test_id, "test_invocation_id": inv_id}),
    )
    assert trace["run_id"] == started["run_id"]

    other = rows[1]["invocation_id"]
    done = ok(
        api,
        "tests",
        "invocation",
        "complete",
        "--body",
        json.dumps({"invocation_id": other, "output": "x"}),
    )
    assert done["status"] == "completed"
    draft = ok(
        api,
        "tests",
        "invocation",
        "draft",
        "--body",
        json.dumps({"test_id": test_id, "scenario_id": "q000", "model": "strong", "epoch": 2}),
    )
    assert (
        ok(api, "tests", "invocation", "drafts", "--body", json.dumps({"test_id": test_id}))[
            "drafts"
        ][0]["draft_id"]
        == draft["draft_id"]
    )
    created = ok(
        api, "tests", "invocation", "create", "--body", json.dumps({"draft_id": draft["draft_id"]})
    )
    assert created["status"] == "queued" and created["epoch"] == 2
    term = ok(
        api,
        "tests",
        "invocation",
        "terminate",
        "--body",
        json.dumps({"invocation_id": created["invocation_id"]}),
    )
    assert term["status"] == "terminated"
    assert ok(api, "tests", "results", "--body", json.dumps({"test_id": test_id}))["rows"]

    # Errors: the server's message, non-zero exit.
    refused = glow(
        api,
        "tests",
        "invocation",
        "terminate",
        "--body",
        json.dumps({"invocation_id": created["invocation_id"]}),
    )
    assert refused.returncode == 1 and "409" in refused.stderr and "terminated" in refused.stderr
    missing = glow(api, "tests", "invocation", "get", "--body", "{}")
    assert missing.returncode == 1 and "invocation_id" in missing.stderr
    bad = glow(api, "tests", "invocation", "get", "--body", "{oops")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    unauthorized = glow(api, "tests", "list", env={**api.env, "GLOW_TOKEN": "wrong"})
    assert unauthorized.returncode == 1 and "401" in unauthorized.stderr


def test_seed_cli_examples_as_written(api: Api) -> None:
    test_id, rows = api.create_test("seed-cli")
    inv_id = next(r["invocation_id"] for r in rows if r["model"] == "strong")
    script = f"""set -e
glow tests invocation get --body '{{"invocation_id": "{inv_id}"}}'
glow tests invocation run --body '{{"invocation_id": "{inv_id}"}}'
glow tests invocations --body '{{"test_id": "{test_id}"}}'
"""
    env = {**api.env, "PATH": f"{os.path.dirname(sys.executable)}:{api.env['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    outputs = [json.loads(line) for line in done.stdout.splitlines()]
    assert outputs[0]["invocation_id"] == inv_id and outputs[1]["status"] == "running"
    assert len(outputs[2]["invocations"]) == len(rows)
    api.wait_status(inv_id, {"completed", "failed"})
    trace = subprocess.run(
        ["bash", "-c", f"""glow tests invocation trace --body '{{"invocation_id": "{inv_id}"}}'"""],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert trace.returncode == 0, trace.stderr
    assert json.loads(trace.stdout)["run"]["trace"]


def test_server_down_is_a_clear_error(api: Api) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = glow(api, "tests", "list", env={**api.env, "GLOW_INSTANCE_URL": url})
    assert done.returncode == 3 and url in done.stderr and "glow serve" in done.stderr


def test_client_imports_no_prefect_litellm_sqlalchemy_or_rich(api: Api) -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['glow', 'tests', 'list']\n"
        "try:\n    runpy.run_module('glow.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted((set(sys.modules) | {m.split('.')[0] for m in sys.modules}) & "
        "{'prefect', 'litellm', 'sqlalchemy', 'fastapi', 'glow.store', 'rich', 'httpx'})\n"
        "print(heavy, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=api.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(done.stdout)["tests"] is not None
    assert done.stderr.strip().endswith("[]"), done.stderr


def test_serve_refuses_to_start_without_a_token(api: Api) -> None:
    env = {k: v for k, v in api.env.items() if k != "GLOW_TOKEN"}
    done = glow(api, "serve", "--port", str(free_port()), env=env)
    assert done.returncode != 0 and "token" in done.stderr
    done = glow(api, "serve", "--open", "--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert done.returncode != 0 and "loopback" in done.stderr
