"""The bundled simulator, over real HTTP through litellm, plus the quickstart data it serves."""

from __future__ import annotations

import os

# Before litellm is imported anywhere: no price-map or tokenizer downloads.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import asyncio  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from email.utils import parsedate_to_datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import litellm  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from glow.models import Scenario, TestSpec  # noqa: E402
from glow.simulator import (  # noqa: E402
    FAULT_KINDS,
    NO_IMAGE_REPLY,
    Faults,
    Profile,
    Simulator,
    SimulatorProcess,
    main,
    parse_faults,
    parse_judge_prompt,
    parse_profile,
    resolve_profiles,
    run_in_thread,
    scenario_last_user_text,
    token_f1,
)
from glow.tools import calculator  # noqa: E402

# litellm's own TypedDicts make pydantic warn on first use; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "data" / "scenarios" / "quickstart.jsonl"
FAKE_KEY = "sk-fake-test"
CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def load_quickstart() -> list[Scenario]:
    lines = QUICKSTART.read_text(encoding="utf-8").splitlines()
    return [Scenario.model_validate_json(line) for line in lines if line.strip()]


SCENARIOS = load_quickstart()
BY_CATEGORY: dict[str, list[Scenario]] = {}
for _s in SCENARIOS:
    BY_CATEGORY.setdefault(_s.category, []).append(_s)


@pytest.fixture(scope="module")
def sim():
    """One simulator subprocess for the module: fast profiles, plus a slow and a perfect one."""
    profiles = {
        "sim-strong": Profile(0.9, 0.005),
        "sim-fast": Profile(0.55, 0.005),
        "sim-judge": Profile(0.9, 0.0),
        "sim-slow": Profile(0.5, 0.3),
        "sim-perfect": Profile(1.0, 0.0),
    }
    with SimulatorProcess(QUICKSTART, profiles=profiles) as process:
        yield process


def chat(sim: SimulatorProcess, model: str, messages: list[dict], **kwargs):
    return litellm.completion(
        model=f"openai/{model}",
        api_base=sim.url,
        api_key=FAKE_KEY,
        messages=messages,
        num_retries=0,
        **kwargs,
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def request_messages(scenario: Scenario, with_images: bool = True) -> list[dict]:
    """A scenario's input as OpenAI messages (images as data URIs), like the runner sends it."""
    if isinstance(scenario.input, str):
        return user(scenario.input)
    messages = []
    for message in scenario.input:
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        parts = []
        for part in message.content:
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
            elif part.type == "image" and with_images:
                data = base64.b64encode((ROOT / part.image).read_bytes()).decode()
                url = f"data:image/png;base64,{data}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
        messages.append({"role": message.role, "content": parts})
    return messages


def content(response) -> str:
    return response.choices[0].message.content or ""


# --------------------------------------------------------------------------- over HTTP


def test_matched_scenario_is_answered_with_usage(sim):
    scenario = BY_CATEGORY["exact"][0]
    response = chat(sim, "sim-perfect", request_messages(scenario))
    assert content(response) == scenario.reference
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_unmatched_prompt_gets_generic_reply(sim):
    assert content(chat(sim, "sim-strong", user("Tell me a joke about pelicans."))) == (
        "I am not sure."
    )


def test_multiple_choice_answers_with_a_letter(sim):
    scenario = BY_CATEGORY["multiple_choice"][0]
    assert content(chat(sim, "sim-perfect", request_messages(scenario))) == (
        f"Answer: {scenario.reference}"
    )


def test_answers_are_deterministic(sim):
    for scenario in BY_CATEGORY["exact"][:8] + BY_CATEGORY["multiple_choice"][:4]:
        first = content(chat(sim, "sim-fast", request_messages(scenario)))
        second = content(chat(sim, "sim-fast", request_messages(scenario)))
        assert first == second, scenario.id


def test_strong_model_beats_fast_model_on_exact(sim):
    correct: Counter[str] = Counter()
    for scenario in BY_CATEGORY["exact"]:
        for model in ("sim-strong", "sim-fast"):
            if content(chat(sim, model, request_messages(scenario))) == scenario.reference:
                correct[model] += 1
    assert correct["sim-strong"] > correct["sim-fast"], correct
    assert correct["sim-fast"] < len(BY_CATEGORY["exact"])  # wrong answers do happen


def test_tool_call_flow(sim):
    scenario = BY_CATEGORY["tool_use"][0]
    messages = request_messages(scenario)
    first = chat(sim, "sim-perfect", messages, tools=[CALCULATOR_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.id and call.function.name == "calculator"
    expression = json.loads(call.function.arguments)["expression"]
    assert expression == scenario.metadata["expression"]

    result = calculator(expression)
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "calculator", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    second = chat(sim, "sim-perfect", messages, tools=[CALCULATOR_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert content(second) == result == scenario.reference


def test_tool_scenario_without_tools_is_answered_directly(sim):
    scenario = BY_CATEGORY["tool_use"][0]
    response = chat(sim, "sim-perfect", request_messages(scenario))
    assert content(response) == scenario.reference


def judge_prompt(reference: str, answer: str) -> str:
    return (
        "Grade the answer against the reference.\n"
        "[CRITERIA]\nThe answer states the same fact as the reference.\n"
        "[QUESTION]\nWhy is the sky blue?\n"
        f"[REFERENCE]\n{reference}\n"
        f"[ANSWER]\n{answer}\n"
    )


def test_judge_markers_produce_a_json_score(sim):
    ref = "Air molecules scatter blue light more than red light."
    same = json.loads(content(chat(sim, "sim-judge", user(judge_prompt(ref, ref)))))
    assert same["score"] == 10 and same["rationale"]
    unrelated = json.loads(content(chat(sim, "sim-judge", user(judge_prompt(ref, "Pizza.")))))
    assert unrelated["score"] == 0
    partial = json.loads(
        content(chat(sim, "sim-judge", user(judge_prompt(ref, "Blue light is scattered."))))
    )
    assert 0 < partial["score"] < 10
    neutral = json.loads(content(chat(sim, "sim-strong", user(judge_prompt("(none)", "x")))))
    assert neutral["score"] == 5


def test_images_reach_the_model(sim):
    scenario = BY_CATEGORY["vision"][0]
    with_image = content(chat(sim, "sim-perfect", request_messages(scenario)))
    assert with_image == scenario.reference
    without = content(chat(sim, "sim-perfect", request_messages(scenario, with_images=False)))
    assert without == NO_IMAGE_REPLY


def test_unknown_model_is_a_404(sim):
    with pytest.raises(litellm.exceptions.NotFoundError) as info:
        chat(sim, "no-such-model", user("hello"))
    assert info.value.status_code == 404
    raw = httpx.post(f"{sim.url}/chat/completions", json={"model": "nope", "messages": []})
    assert raw.status_code == 404
    assert raw.json()["error"]["code"] == "model_not_found"
    assert raw.json()["error"]["type"] == "invalid_request_error"


def test_models_and_health(sim):
    ids = {m["id"] for m in httpx.get(f"{sim.url}/models").json()["data"]}
    assert {"sim-strong", "sim-fast", "sim-judge", "sim-echo", "sim-slow"} <= ids
    health = httpx.get(f"{sim.base_url}/health").json()
    assert health["status"] == "ok" and health["scenarios"] == len(SCENARIOS)


def test_stats_count_concurrency(sim):
    async def burst() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": "sim-slow", "messages": user("hi")}
            responses = await asyncio.gather(
                *(client.post(f"{sim.url}/chat/completions", json=body) for _ in range(20))
            )
        assert all(r.status_code == 200 for r in responses)

    httpx.post(f"{sim.base_url}/stats/reset")
    asyncio.run(burst())
    stats = httpx.get(f"{sim.base_url}/stats").json()["models"]["sim-slow"]
    assert stats["requests"] == 20
    assert 1 < stats["max_in_flight"] <= 20
    assert stats["in_flight"] == 0


def test_streaming_matches_non_streaming(sim):
    scenario = BY_CATEGORY["free_text"][0]
    expected = content(chat(sim, "sim-perfect", request_messages(scenario)))
    stream = chat(sim, "sim-perfect", request_messages(scenario), stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == expected


def test_echo_and_thread_mode_with_fixed_latency():
    with run_in_thread(QUICKSTART, latency=0.0) as handle:
        assert all(p.latency_s == 0.0 for p in handle.simulator.profiles.values())
        body = {"model": "sim-echo", "messages": user("  say   this back ")}
        reply = httpx.post(f"{handle.url}/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == "  say   this back "
        stats = httpx.get(handle.url.removesuffix("/v1") + "/stats").json()
        assert stats["models"]["sim-echo"]["requests"] == 1


def test_seed_changes_the_draw_deterministically():
    sim = Simulator(SCENARIOS, resolve_profiles())
    scenario = BY_CATEGORY["exact"][0]
    body = {"messages": request_messages(scenario)}
    profile = Profile(0.5, 0.0)
    answers = [sim.reply("m", profile, {**body, "seed": seed}).content for seed in range(20)]
    again = [sim.reply("m", profile, {**body, "seed": seed}).content for seed in range(20)]
    assert answers == again
    assert scenario.reference in answers and len(set(answers)) > 1


# --------------------------------------------------------------------------- faults


def post_chat(url: str, model: str, text: str = "hi", **kwargs) -> httpx.Response:
    body = {"model": model, "messages": user(text)}
    return httpx.post(f"{url}/chat/completions", json=body, **{"timeout": 10, **kwargs})


def test_faults_from_python_then_changed_at_runtime():
    """`faults=` at start, then `POST /faults` phases: scripts restart, `*` is the default,
    `?replace` clears the rest, bad specs are a 400 (a ValueError from `set_faults`)."""
    faults = {"sim-echo": {"fail_first": 2, "fail_kind": "500"}}
    with run_in_thread(QUICKSTART, latency=0.0, faults=faults) as handle:
        assert [post_chat(handle.url, "sim-echo").status_code for _ in range(3)] == [500, 500, 200]
        shown = httpx.get(f"{handle.base_url}/faults").json()["faults"]
        assert shown["sim-echo"]["script"] == ["500", "500"]

        # Per prompt: each distinct prompt fails once, then succeeds.
        handle.set_faults({"sim-echo": {"fail_first": 1, "fail_kind": "503", "per_prompt": True}})
        codes = [post_chat(handle.url, "sim-echo", t).status_code for t in ("a", "b", "a", "b")]
        assert codes == [503, 503, 200, 200]

        # `*` applies to models without their own faults; `replace` drops sim-echo's.
        handle.set_faults({"*": {"fail_first": 1, "fail_kind": "502"}}, replace=True)
        assert post_chat(handle.url, "sim-fast").status_code == 502
        assert post_chat(handle.url, "sim-echo").status_code == 502
        assert post_chat(handle.url, "sim-echo").status_code == 200
        assert set(handle.set_faults({})) == {"*"}
        handle.set_faults({"*": None})

        # A fault on a stream request is a plain error response, and leaves nothing in flight.
        handle.set_faults({"sim-echo": {"fail_first": 1, "fail_kind": "429"}})
        body = {"model": "sim-echo", "messages": user("hi"), "stream": True}
        assert httpx.post(f"{handle.url}/chat/completions", json=body).status_code == 429
        assert httpx.post(f"{handle.url}/chat/completions", json=body).status_code == 200

        stats = handle.stats()["models"]
        assert stats["sim-echo"]["faults"] == {"500": 2, "503": 2, "502": 1, "429": 1}
        assert stats["sim-fast"]["faults"] == {"502": 1}
        assert stats["sim-echo"]["in_flight"] == stats["sim-fast"]["in_flight"] == 0
        assert handle.stats()["faults"] == 7

        for bad in ({"no-such-model": {"500": 1}}, {"sim-echo": {"418": 0.5}}):
            raw = httpx.post(f"{handle.base_url}/faults", json=bad)
            assert raw.status_code == 400 and "faults" in raw.json()["error"]["message"]
            with pytest.raises(ValueError):
                handle.set_faults(bad)
        assert httpx.delete(f"{handle.base_url}/faults").json() == {"faults": {}}
        assert post_chat(handle.url, "sim-echo").status_code == 200
        handle.reset_stats()
        assert handle.stats()["models"]["sim-echo"]["faults"] == {}


def test_fault_responses_look_like_a_provider():
    """Each kind's wire form: status, headers (all three Retry-After forms) and body."""
    key = "sk-echo-me-0123456789"
    with run_in_thread(QUICKSTART, latency=0.0) as handle:

        def hit(kind: str, **options) -> httpx.Response:
            handle.set_faults({"sim-echo": {"fail_first": 1, "fail_kind": kind, **options}})
            return post_chat(handle.url, "sim-echo", headers={"Authorization": f"Bearer {key}"})

        limited = hit("429", retry_after_s=2)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        dated = hit("429", retry_after_s=2, retry_after_form="http-date")
        ahead = parsedate_to_datetime(dated.headers["retry-after"]).timestamp() - time.time()
        assert 0 < ahead <= 2.5
        ms = hit("429", retry_after_s=1.5, retry_after_form="ms")
        assert ms.headers["retry-after-ms"] == "1500" and "retry-after" not in ms.headers
        bare = hit("429_no_retry_after")
        assert bare.status_code == 429 and "retry-after" not in bare.headers
        assert [hit(k).status_code for k in ("500", "503", "400")] == [500, 503, 400]
        gateway = hit("502")
        assert gateway.status_code == 502 and gateway.headers["content-type"].startswith(
            "text/html"
        )
        unauthorized = hit("401")
        assert unauthorized.status_code == 401 and key in unauthorized.json()["error"]["message"]
        context = hit("context")
        assert context.status_code == 400
        assert context.json()["error"]["code"] == "context_length_exceeded"
        malformed = hit("malformed")
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            json.loads(malformed.content)
        empty = hit("empty")
        assert empty.status_code == 200 and empty.json()["choices"] == []


def test_reset_drops_the_connection_without_a_response():
    """A `reset` aborts the TCP connection (RST): the client's read fails, with no status."""
    with run_in_thread(QUICKSTART, latency=0.0, faults={"sim-echo": {"reset": 1.0}}) as handle:
        for _ in range(2):  # also on a reused keep-alive connection
            with pytest.raises(httpx.ReadError):  # ECONNRESET; a cut-off body would differ
                post_chat(handle.url, "sim-echo")
        handle.set_faults({"sim-echo": None})
        assert post_chat(handle.url, "sim-echo").status_code == 200  # the server is fine
        assert handle.stats()["models"]["sim-echo"]["faults"] == {"reset": 2}


def test_hang_ends_when_the_client_gives_up():
    """A 30 s hang outlasts the client's 0.3 s timeout; the server then stops waiting."""
    faults = {"sim-echo": {"hang": 1.0, "hang_s": 30}}
    with run_in_thread(QUICKSTART, latency=0.0, faults=faults) as handle:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            post_chat(handle.url, "sim-echo", timeout=0.3)
        assert time.monotonic() - started < 2
        deadline = time.monotonic() + 2
        while handle.simulator.stats["sim-echo"].in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handle.simulator.stats["sim-echo"].in_flight == 0


def test_slow_stream_spaces_its_chunks(sim):
    """A slow stream delivers the same text as a normal one, its chunks ~0.1 s apart."""
    scenario = BY_CATEGORY["free_text"][0]
    expected = content(chat(sim, "sim-perfect", request_messages(scenario)))
    sim.set_faults({"sim-perfect": {"slow_stream": 1.0, "stream_chunk_delay_s": 0.1}})
    try:
        started = time.monotonic()
        arrivals, text = [], ""
        for chunk in chat(sim, "sim-perfect", request_messages(scenario), stream=True):
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content or ""
        assert text == expected
        assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] >= 0.1 * (len(arrivals) - 2)
        started = time.monotonic()
        assert content(chat(sim, "sim-perfect", request_messages(scenario))) == expected
        assert time.monotonic() - started >= 0.3  # non-stream: the same total delay
    finally:
        sim.set_faults({"sim-perfect": None})


def test_fault_rates_are_seeded_and_matched():
    """Rates are drawn from a RNG seeded by (seed, model): same seed, same sequence; `match`
    confines faults to prompts containing a text."""
    simulator = Simulator([], resolve_profiles())
    body = {"messages": user("hello")}

    def draws(seed: int, n: int = 400) -> list[str | None]:
        simulator.set_faults({"sim-fast": {"500": 0.2, "reset": 0.1, "seed": seed}})
        return [(simulator.draw_fault("sim-fast", body) or (None,))[0] for _ in range(n)]

    first = draws(1)
    assert draws(1) == first and draws(2) != first
    assert 0.15 < first.count("500") / len(first) < 0.25
    assert 0.05 < first.count("reset") / len(first) < 0.15
    assert simulator.draw_fault("sim-strong", body) is None  # no faults for other models

    simulator.set_faults({"sim-fast": {"fail_first": 1, "fail_kind": "401", "match": "secret"}})
    assert simulator.draw_fault("sim-fast", body) is None  # not matched: script not advanced
    assert simulator.draw_fault("sim-fast", {"messages": user("a secret")})[0] == "401"
    assert simulator.draw_fault("sim-fast", {"messages": user("a secret")}) is None


def test_fault_specs_parse_and_validate():
    """The JSON form: kinds as rate keys or under `rates`, `fail_first` sugar, round trips."""
    parsed = Faults.parse({"429": 0.05, "rates": {"500": 0.02}, "retry_after_s": 1})
    assert parsed.rates == {"429": 0.05, "500": 0.02} and parsed.retry_after_s == 1
    scripted = Faults.parse({"fail_first": 2, "fail_kind": "reset", "per_prompt": True})
    assert scripted.script == ("reset", "reset") and scripted.per_prompt
    assert Faults.parse(scripted.to_json()) == scripted
    assert parse_faults('{"m": {"empty": 1}, "n": null}') == {
        "m": Faults({"empty": 1.0}),
        "n": None,
    }
    assert set(FAULT_KINDS) >= {"429", "reset", "hang", "malformed", "empty", "401", "context"}
    for bad in (
        {"teapot": 0.1},
        {"500": 0.7, "503": 0.5},
        {"500": -0.1},
        {"fail_first": 2},
        {"fail_first": 1, "fail_kind": "404"},
        {"retry_after_form": "minutes"},
        {"hang_s": -1},
    ):
        with pytest.raises(ValueError):
            Faults.parse(bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_faults("{nope")


def test_faults_flag_reaches_the_subprocess():
    """`SimulatorProcess(faults=)` passes `--faults JSON`; a bad spec fails before starting."""
    faults = {"sim-echo": {"fail_first": 1, "fail_kind": "503"}}
    with SimulatorProcess(QUICKSTART, latency=0.0, faults=faults) as process:
        assert "--faults" in process.command()
        assert [post_chat(process.url, "sim-echo").status_code for _ in range(2)] == [503, 200]
        assert process.stats()["models"]["sim-echo"]["faults"] == {"503": 1}
    with pytest.raises(ValueError):
        SimulatorProcess(faults={"sim-echo": {"bogus": 1}})
    assert main(["--faults", "{not json"]) == 2
    assert main(["--faults", '{"no-such-model": {"500": 1}}']) == 2


# --------------------------------------------------------------------------- pure helpers


def test_profiles_parse_and_override():
    assert parse_profile("x=0.5:0.2") == ("x", Profile(0.5, 0.2))
    assert parse_profile("y=1:0:0:echo") == ("y", Profile(1.0, 0.0, 0.0, "echo"))
    for bad in ("x", "x=0.5", "x=2:0.1", "x=a:b"):
        with pytest.raises(ValueError):
            parse_profile(bad)
    resolved = resolve_profiles(["sim-fast=0.1:1"], latency=0.2)
    assert resolved["sim-fast"] == Profile(0.1, 0.2)
    assert resolved["sim-strong"].latency_s == 0.2 and resolved["sim-strong"].latency_jitter_s == 0
    assert parse_profile(Profile(0.3, 0.1, 0.01).flag("z")) == ("z", Profile(0.3, 0.1, 0.01))


def test_token_f1_and_judge_parsing():
    assert token_f1("The cat sat", "the cat sat") == 1.0
    assert token_f1("dog", "cat") == 0.0
    sections = parse_judge_prompt(judge_prompt("ref text", "the answer") + "[END]\nReply in JSON.")
    assert sections == {
        "criteria": "The answer states the same fact as the reference.",
        "question": "Why is the sky blue?",
        "reference": "ref text",
        "answer": "the answer",
    }
    assert parse_judge_prompt("[ANSWER]\nx\n[REFERENCE]\ny\n[CRITERIA]\n[QUESTION]") is None


# --------------------------------------------------------------------------- quickstart data


def test_quickstart_scenarios_validate_and_cover_categories():
    assert len(SCENARIOS) >= 66
    ids = [s.id for s in SCENARIOS]
    assert len(set(ids)) == len(ids)
    texts = [" ".join(scenario_last_user_text(s).split()) for s in SCENARIOS]
    assert len(set(texts)) == len(texts), "the simulator indexes scenarios by their prompt"
    minimum = {"exact": 20, "multiple_choice": 20, "free_text": 15, "vision": 3, "tool_use": 5}
    for category, count in minimum.items():
        assert len(BY_CATEGORY[category]) >= count, category
    assert set(BY_CATEGORY) == set(minimum)
    for s in BY_CATEGORY["multiple_choice"]:
        assert s.choices and len(s.choices) == 4
        assert s.reference in "ABCD"[: len(s.choices)]
        assert f"{s.reference}. {s.choices['ABCD'.index(s.reference)]}" in s.input
    for s in BY_CATEGORY["tool_use"]:
        assert s.metadata["tool"] == "calculator"
        assert calculator(s.metadata["expression"]) == s.reference
    for s in BY_CATEGORY["vision"]:
        assert "image" in s.modalities


def test_quickstart_images_exist_and_are_small_pngs():
    for s in BY_CATEGORY["vision"]:
        for message in s.input:
            for part in message.content:
                if part.type == "image":
                    path = ROOT / part.image
                    data = path.read_bytes()
                    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
                    assert len(data) < 5_000, path


def test_quickstart_yaml_is_a_valid_test_spec():
    text = (ROOT / "data" / "tests" / "quickstart.yaml").read_text(encoding="utf-8")
    spec = TestSpec.model_validate(
        yaml.safe_load(text.replace("${GLOW_SIMULATOR_URL}", "http://127.0.0.1:9/v1"))
    )
    assert spec.name == "quickstart"
    assert (ROOT / spec.scenarios).is_file()
    by_name = {m.name: m for m in spec.models}
    assert set(by_name) == {"sim-strong", "sim-fast"}
    assert [m.value for m in by_name["sim-strong"].modalities] == ["text", "image"]
    assert [m.value for m in by_name["sim-fast"].modalities] == ["text"]
    assert all(m.api_base == "http://127.0.0.1:9/v1" and m.prices for m in spec.models)
    assert spec.judge is not None and spec.judge.model == "openai/sim-judge"
    assert spec.agents[0].tools == ["glow.tools:calculator"]


# --------------------------------------------------------------------------- calculator


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1234 * 5678", "7006652"),
        ("(2 + 3) * -4", "-20"),
        ("7 / 2", "3.5"),
        ("144 / 12", "12"),
        ("2 ** 10", "1024"),
        ("17 // 5 + 17 % 5", "5"),
        ("1 / 3", "0.333333333333"),
    ],
)
def test_calculator_evaluates(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "not allowed"),
        ("a + 1", "Name is not allowed"),
        ("2 ** 1000", "exponent"),
        ("1 / 0", "division by zero"),
        ("(9 ** 99) ** 99", "too large"),
        ("'a' * 3", "only numbers"),
        ("", "give an arithmetic expression"),
        ("2 +", "not a valid expression"),
    ],
)
def test_calculator_refuses(expression, message):
    with pytest.raises(ValueError, match=message):
        calculator(expression)
