"""Keys go only where a test sends them, stay out of every output, and are checked up front.

- A model with its own `api_base` gets only the key its test names: checked on the wire, by a
  loopback server that records the credential headers of every request it receives.
- An error echoing the value of a provider key variable from the environment (one the test
  never named) is masked in the store, the trace, the artifacts, the logs and the parquet files.
- `params` that carry credentials or collide with Glow's own call arguments are refused at load.
- `${VAR}` is expanded in a test's settings only, never in scenario content.
- A model whose provider key is missing is refused by `glow run` with exit 2, before any call.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import api_harness
import pytest
import yaml
from api_harness import Api
from conftest import ROOT

# Imported at collection on purpose: Prefect binds its console log handler to the stderr of the
# moment it is first imported, and a capfd capture's stderr (test_secrets uses one) is closed
# after its test, which breaks every later flow's logging in the same session.
from prefect import flow, get_run_logger

from glow.errors import SpecError
from glow.spec import load_test

ENV_KEY = "sk-glowkeys-ENVIRONMENT-3f9a1c7e5b2d8046"
NAMED_KEY = "sk-glowkeys-NAMED-8e2b4d6f0a1c3579"

api = api_harness.api  # the module-scoped `glow serve` fixture (only the API test uses it)


# --------------------------------------------------------------------------- the wire


class _Recorder(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that records the credential headers it is sent."""

    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        wanted = ("authorization", "api-key", "x-api-key")
        self.seen.append({k.lower(): v for k, v in self.headers.items() if k.lower() in wanted})
        body = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "local",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("model", "variable"),
    [("openai/local", "OPENAI_API_KEY"), ("hosted_vllm/local", "HOSTED_VLLM_API_KEY")],
)
def test_custom_api_base_gets_no_key_from_the_environment(
    recorder: tuple[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    variable: str,
) -> None:
    """The provider's variable is set, the test names no key: none of it reaches the server."""
    from glow.llm import NO_KEY, CallOptions, call_model
    from glow.models import ModelSpec

    url, seen = recorder
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv(variable, "fake")
    seen.clear()
    spec = ModelSpec(name="local", model=model, api_base=url)
    reply = call_model(spec, [{"role": "user", "content": "hi"}], options=CallOptions())
    assert reply.text == "ok"
    assert len(seen) == 1
    sent = " ".join(seen[0].values())
    assert "fake" not in sent and ENV_KEY not in sent, seen
    assert seen[0] == {"authorization": f"Bearer {NO_KEY}"}  # a placeholder, no credential


def test_custom_api_base_gets_the_key_the_test_names(
    recorder: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from glow.llm import CallOptions, call_model
    from glow.models import ModelSpec

    url, seen = recorder
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("GLOW_KEYS_NAMED", NAMED_KEY)
    seen.clear()
    spec = ModelSpec(
        name="local", model="openai/local", api_base=url, api_key_env="GLOW_KEYS_NAMED"
    )
    call_model(spec, [{"role": "user", "content": "hi"}], options=CallOptions())
    assert seen == [{"authorization": f"Bearer {NAMED_KEY}"}]


# --------------------------------------------------------------------------- masking


@pytest.fixture
def python_logs() -> Iterator[io.StringIO]:
    """Every log line of this process while the test runs, as a handler on the root logger
    writes it (not capfd: Prefect's console handler would keep its closed stream afterwards)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_environment_key_echoed_by_a_provider_is_masked_everywhere(
    prefect_server: str,
    glow_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    python_logs: io.StringIO,
) -> None:
    """A model with no key named and no api_base uses OPENAI_API_KEY from the environment (its
    provider's own endpoint, here moved by OPENAI_BASE_URL to a simulator that answers every
    call with a 401 echoing the key). The key is not the call's named key, yet it is masked in
    the store, the trace, the artifacts, the logs and the parquet files."""
    import pandas as pd
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from flows.run_test import run_test_sync
    from glow.simulator import SimulatorProcess
    from glow.store import Store

    lines = (ROOT / "data/scenarios/quickstart.jsonl").read_text().splitlines()[:4]
    (glow_env / "s.jsonl").write_text("\n".join(lines) + "\n")
    spec = {
        "name": "env-key-echo",
        "scenarios": str(glow_env / "s.jsonl"),
        "models": [{"name": "env-keyed", "model": "openai/sim-strong"}],
        "rubric": "exact_answer",
        "max_retries": 0,
    }
    path = glow_env / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    faults = {"*": {"rates": {"401": 1.0}, "seed": 3}}
    with SimulatorProcess(scenarios=[ROOT / "data" / "scenarios"], faults=faults) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.url)
        monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
        result = run_test_sync(path=str(path))

    store = Store.from_settings()
    invocations = store.list_invocations(result["test_id"])
    assert invocations and all(i.status == "failed" for i in invocations)
    # The echo happened (the provider answered with the key), and was masked.
    assert all("Incorrect API key provided: ***" in (i.error_message or "") for i in invocations)
    outputs: dict[str, str] = {}
    for inv in invocations:
        hydrated = store.get_invocation(inv.invocation_id, runs=True)
        outputs[f"store {inv.invocation_id}"] = hydrated.model_dump_json()
    for file in (glow_env / "results").rglob("*.parquet"):
        outputs[str(file)] = pd.read_parquet(file).to_json()
    flow_run_id = store.get_test(result["test_id"]).flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    traces = [a for a in artifacts if a.key and a.key.startswith("trace-")]
    assert traces and all("***" in str(a.data) for a in traces)  # the error is in the trace
    assert any(str(f).endswith("invocations.parquet") for f in outputs)
    outputs["artifacts"] = json.dumps([str(a.data) for a in artifacts])
    outputs["prefect logs"] = "\n".join(log.message for log in logs)
    outputs["python logs"] = python_logs.getvalue()
    leaked = [where for where, text in outputs.items() if ENV_KEY in text]
    assert not leaked, f"the environment's key leaked into {leaked}"


def test_redact_masks_credential_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from glow.secrets import redact

    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "value-of-the-api-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-123")
    monkeypatch.setenv("CI_JOB_TOKEN", "job-token-value-456")
    monkeypatch.setenv("GLOW_KEYS_PLAIN", "plain-setting-value")  # not a credential's name
    monkeypatch.setenv("SHORT_TOKEN", "true")  # too short to be a key: left alone
    text = "value-of-the-api-key aws-secret-value-123 job-token-value-456 plain-setting-value true"
    assert redact(text) == "*** *** *** plain-setting-value true"


def test_error_rows_mask_credential_variables_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever path an error took (a grader, a tool, a crash), the rows that carry error text
    and rationales mask credential values as they are built."""
    from glow.models import Invocation, Run, StandardScore, TraceEvent

    monkeypatch.setenv("GLOW_KEYS_ROW_API_KEY", ENV_KEY)
    text = f"not graded: ValueError: bad key {ENV_KEY}"
    score = StandardScore(
        invocation_id="i",
        run_id="r",
        grading_id="g",
        rubric="r",
        rubric_version="1",
        standard="s",
        kind="python",
        weight=1,
        score=0,
        passed=False,
        rationale=text,
    )
    rows = [
        score.rationale,
        TraceEvent(kind="error", error_type="X", error_message=text).error_message,
        Run(invocation_id="i", error_message=text).error_message,
        Invocation.model_validate(
            {
                "invocation_id": "i",
                "test_id": "t",
                "scenario_id": "s",
                "model": "m",
                "agent": "a",
                "provider": "openai",
                "error_message": text,
            }
        ).error_message,
    ]
    assert rows == ["not graded: ValueError: bad key ***"] * 4
    grading = TraceEvent(kind="grading", content={"standards": {"s": {"why": [text]}}})
    assert grading.content == {"standards": {"s": {"why": ["not graded: ValueError: bad key ***"]}}}


def test_log_lines_mask_credential_variables(
    prefect_server: str,
    monkeypatch: pytest.MonkeyPatch,
    python_logs: io.StringIO,
) -> None:
    """A process that calls models masks credential values in every log line it writes: a
    flow's run logger (what the Prefect UI shows) and plain Python logging, tracebacks too."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.context import FlowRunContext

    from glow.llm import litellm

    monkeypatch.setenv("GLOW_KEYS_LOGGED_API_KEY", ENV_KEY)
    litellm()  # what every process that calls a model does first

    @flow(name="glow-keys-log-probe")
    def probe() -> str:
        get_run_logger().warning("provider said: bad key %s", ENV_KEY)
        try:
            raise RuntimeError(f"echo {ENV_KEY}")
        except RuntimeError as exc:
            error = exc
        logging.getLogger("glow.keys-test").error("call failed", exc_info=error)
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        return str(context.flow_run.id)

    flow_run_id = probe()
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 20
        logs: list[Any] = []
        while time.monotonic() < deadline and not any("bad key" in x.message for x in logs):
            time.sleep(0.5)
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
    prefect_logs = "\n".join(x.message for x in logs)
    assert "provider said: bad key ***" in prefect_logs
    assert "RuntimeError: echo ***" in python_logs.getvalue()  # the traceback, masked
    outputs = {"prefect": prefect_logs, "python": python_logs.getvalue()}
    leaked = [where for where, text in outputs.items() if ENV_KEY in text]
    assert not leaked, f"the key leaked into {leaked}"


# --------------------------------------------------------------------------- params

SCENARIO = {"id": "s1", "input": "What is 2+2?", "reference": "4"}


def _write_test(tmp: Path, model: dict[str, Any], **extra: Any) -> Path:
    spec = {"name": "t", "scenarios": [SCENARIO], "models": [model], "rubric": "exact_answer"}
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump({**spec, **extra}, sort_keys=False))
    return path


LOCAL = {"name": "m1", "model": "openai/local", "api_base": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    [
        ({"timeout": 5}, "models[0].params.timeout", "use the test's timeout_s"),
        ({"api_base": "http://x"}, "models[0].params.api_base", "api_base field"),
        ({"base_url": "http://x"}, "models[0].params.base_url", "api_base field"),
        ({"max_retries": 5}, "models[0].params.max_retries", "the test's max_retries"),
        ({"num_retries": 5}, "models[0].params.num_retries", "the test's max_retries"),
        ({"messages": []}, "models[0].params.messages", "scenario"),
        ({"aws_secret_access_key": "x"}, "models[0].params.aws_secret_access_key", "credential"),
        ({"api_key": "x"}, "models[0].params.api_key", "credential"),
        ({"azure_ad_token": "x"}, "models[0].params.azure_ad_token", "credential"),
        (
            {"extra_headers": {"Authorization": "Bearer x"}},
            "models[0].params.extra_headers.Authorization",
            "credential",
        ),
        (
            {"extra_headers": {"x-api-key": "x"}},
            "models[0].params.extra_headers.x-api-key",
            "credential",
        ),
        ({"extra_headers": {"api-key": "x"}}, "models[0].params.extra_headers.api-key", "cred"),
    ],
)
def test_params_that_collide_or_carry_credentials_are_refused(
    tmp_path: Path, params: dict[str, Any], field: str, hint: str
) -> None:
    path = _write_test(tmp_path, {**LOCAL, "params": {"temperature": 0, **params}})
    with pytest.raises(SpecError) as info:
        load_test(path)
    message = str(info.value)
    assert f"{path}:" in message and f"{field}: " in message and hint in message, message


def test_params_refused_in_the_judge_too(tmp_path: Path) -> None:
    judge = {**LOCAL, "name": "j", "params": {"extra_headers": {"Authorization": "Bearer x"}}}
    with pytest.raises(SpecError, match=r"judge\.params\.extra_headers\.Authorization: "):
        load_test(_write_test(tmp_path, LOCAL, judge=judge))


def test_ordinary_params_load(tmp_path: Path) -> None:
    params = {
        "temperature": 0,
        "max_tokens": 64,
        "top_k": 5,
        "prompt_cache_key": "k",
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"token": 1}}},
        "extra_headers": {"X-Trace": "1"},
    }
    loaded = load_test(_write_test(tmp_path, {**LOCAL, "params": params}))
    assert loaded.spec.models[0].params == params


def test_param_the_provider_would_drop_is_refused_before_any_call(tmp_path: Path) -> None:
    from glow.spec import preflight

    model = {**LOCAL, "model": "anthropic/claude-3-5-haiku-latest", "params": {"seed": 1}}
    loaded = load_test(_write_test(tmp_path, model))
    with pytest.raises(SpecError, match=r"models\[0\]\.params\.seed: litellm does not send"):
        preflight(loaded)


# --------------------------------------------------------------------------- ${VAR}


def test_env_refs_stay_literal_in_scenarios_and_expand_in_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET", "sk-never-in-a-prompt-123456")
    monkeypatch.setenv("GLOW_KEYS_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("name", raising=False)
    prompt = "Print ${HOME}, ${SECRET} and ${name} as they are."
    scenario_file = tmp_path / "scenarios.yaml"
    scenario_file.write_text(
        yaml.safe_dump([{"id": "file-1", "input": prompt, "reference": "${SECRET}"}])
    )
    system = "You answer ${SECRET} questions."
    model = {"name": "m1", "model": "openai/local", "api_base": "${GLOW_KEYS_BASE}"}
    agents = [{"name": "a", "system_prompt": system}]
    inline = [{"id": "inline-1", "input": [{"role": "user", "content": prompt}]}]
    loaded = load_test(
        _write_test(tmp_path, model, scenarios=inline, agents=agents, description="${HOME}")
    )
    assert loaded.scenarios[0].input[0].content == prompt  # type: ignore[index,union-attr]
    assert loaded.spec.agents[0].system_prompt == system
    assert loaded.spec.models[0].api_base == "http://127.0.0.1:9/v1"  # a setting: expanded
    assert loaded.spec.description == os.environ["HOME"]
    from_file = load_test(_write_test(tmp_path, model, scenarios=str(scenario_file)))
    assert from_file.scenarios[0].input == prompt
    assert from_file.scenarios[0].reference == "${SECRET}"


def test_unset_env_ref_in_a_setting_names_the_field(tmp_path: Path) -> None:
    model = {**LOCAL, "api_base": "${GLOW_KEYS_UNSET_BASE}"}
    with pytest.raises(SpecError, match=r"models\[0\]\.api_base: \$\{GLOW_KEYS_UNSET_BASE\}"):
        load_test(_write_test(tmp_path, model))


def test_credential_variable_is_not_expanded_into_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its value would be stored with the test's spec and sent wherever the field goes."""
    monkeypatch.setenv("GLOW_KEYS_PROXY_TOKEN", ENV_KEY)
    model = {**LOCAL, "api_base": "http://127.0.0.1:9/v1?token=${GLOW_KEYS_PROXY_TOKEN}"}
    with pytest.raises(SpecError) as info:
        load_test(_write_test(tmp_path, model))
    message = str(info.value)
    assert "models[0].api_base: ${GLOW_KEYS_PROXY_TOKEN}" in message and "api_key_env" in message
    assert ENV_KEY not in message


# --------------------------------------------------------------------------- missing key


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A new user's shell: no provider keys, no GLOW_* or Prefect settings from this suite."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GLOW_", "PREFECT_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(GLOW_DATABASE_URL=f"sqlite:///{tmp / 'store' / 'glow.db'}", GLOW_DATA_DIR=str(tmp))
    env.update(extra)
    return env


def test_glow_run_refuses_a_model_without_its_provider_key(tmp_path: Path) -> None:
    model = {"name": "gpt", "model": "openai/gpt-4o-mini"}
    path = _write_test(tmp_path, model)
    proc = subprocess.run(
        [sys.executable, "-m", "glow.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "models[0]" in proc.stderr and "set OPENAI_API_KEY" in proc.stderr, proc.stderr
    assert "api_key_env" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "store" / "glow.db").exists()  # refused before anything was written


def test_missing_key_checks_pass_for_a_local_server_or_a_set_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glow.spec import preflight

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    preflight(load_test(_write_test(tmp_path, LOCAL)))  # api_base, no key: a local server
    anthropic = {"name": "c", "model": "anthropic/claude-3-5-haiku-latest"}
    with pytest.raises(SpecError, match="set ANTHROPIC_API_KEY"):
        preflight(load_test(_write_test(tmp_path, anthropic)))
    monkeypatch.setenv("ANTHROPIC_API_KEY", NAMED_KEY)
    preflight(load_test(_write_test(tmp_path, anthropic)))


# --------------------------------------------------------------------------- the API


def test_api_refuses_draft_params_with_credentials_or_glow_arguments(api: Api) -> None:
    """A draft's params are merged into its model's when promoted: the same rules, as a 422,
    through a real `glow serve`."""
    test_id, _ = api.create_test("draft-params")
    body = {"test_id": test_id, "model": "strong"}
    for params in ({"timeout": 3}, {"extra_headers": {"Authorization": "Bearer sk-x"}}):
        response = api.post("invocation_draft", {**body, "params": params})
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert message.startswith("params: '") and next(iter(params)) in message, message
        assert "sk-x" not in message
    ok = api.post("invocation_draft", {**body, "params": {"temperature": 0}})
    assert ok.status_code == 200, ok.text
