"""glow.llm against a provider that misbehaves: the simulator's faults, over real HTTP via litellm.

Why: the one retry loop (issue 4, point 2) and the per-call timeout (point 3) only matter when a
real transport fails in the ways real providers do. Every test here drives `glow.llm.call_model`
or `acall_model` through litellm to a simulator subprocess on 127.0.0.1 whose faults are set per
test with `POST /faults`, and checks both sides: what glow recorded (attempt events, the final
error type and message, no key) and what the server saw (`/stats`: requests, faults injected,
max in flight). Backoffs are made tiny with CallOptions so the whole file stays fast.
"""

from __future__ import annotations

import os

# Before litellm is imported anywhere: no price-map or tokenizer downloads.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import asyncio  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from glow.limits import model_slot  # noqa: E402
from glow.llm import CallOptions, ModelCallError, ModelReply, acall_model, call_model  # noqa: E402
from glow.models import ModelSpec  # noqa: E402
from glow.simulator import Profile, SimulatorProcess  # noqa: E402

# litellm's own TypedDicts make pydantic warn on first use; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")

KEY_ENV = "GLOW_FAULTS_TEST_KEY"
FAKE_KEY = "sk-glowfaults-PLANTED-7c3e9a1b5d2f4e6a"
FAULTY = "sim-faulty"  # fault tests: instant answers, faults set per test
SLOW = "sim-slow-faulty"  # concurrency tests: long enough for calls to overlap


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    """One simulator subprocess for the module; each test sets its own faults (a test phase)."""
    profiles = {FAULTY: Profile(1.0, 0.0), SLOW: Profile(1.0, 0.3)}
    with SimulatorProcess(profiles=profiles) as process:
        # Warm up: litellm's import and first call cost seconds, which no timing here should see.
        with pytest.MonkeyPatch.context() as env:
            env.setenv(KEY_ENV, FAKE_KEY)
            call_model(spec_for(process), ask(), options=options(max_retries=0))
        yield process


@pytest.fixture(autouse=True)
def fake_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A recognisable fake key in the env var the specs name, so leaks can be searched for."""
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    return FAKE_KEY


def spec_for(sim: SimulatorProcess, model: str = FAULTY) -> ModelSpec:
    return ModelSpec(name=model, model=f"openai/{model}", api_base=sim.url, api_key_env=KEY_ENV)


def phase(sim: SimulatorProcess, faults: dict[str, Any]) -> None:
    """Start a test phase: exactly these faults (scripts restarted) and zeroed counters."""
    sim.set_faults(faults, replace=True)
    sim.reset_stats()


def model_stats(sim: SimulatorProcess, model: str = FAULTY) -> dict[str, Any]:
    return sim.stats()["models"].get(model, {"requests": 0, "faults": {}, "max_in_flight": 0})


def options(**overrides: Any) -> CallOptions:
    """Fast options: a 5 s timeout and a ~10 ms backoff base, so retries cost nothing."""
    return CallOptions(**{"timeout_s": 5.0, "backoff_base_s": 0.01, **overrides})


def ask(text: str = "Say hello.") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def events_json(events: list[Any]) -> str:
    return json.dumps([e.model_dump(mode="json") for e in events])


def retry_wait_s(reply: ModelReply) -> float:
    """How long glow waited between a failed attempt and the next, from the recorded events:
    the gap between the error event and the answer, less the answering attempt's latency."""
    error, answer = reply.events[-2], reply.events[-1]
    assert error.kind == "error" and answer.kind == "model_call"
    return (answer.at - error.at).total_seconds() - (answer.latency_s or 0.0)


# --------------------------------------------------------------------------- retried faults


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("429_no_retry_after", "RateLimitError"),
        ("500", "InternalServerError"),
        ("502", "BadGatewayError"),
        ("503", "ServiceUnavailableError"),
        ("reset", "InternalServerError"),  # litellm's "Connection error."
        ("malformed", "InternalServerError"),  # a JSON decode error on a 200
        ("empty", "EmptyResponseError"),  # glow's own: a 200 without choices
    ],
)
def test_transient_fault_is_retried_then_succeeds(
    sim: SimulatorProcess, kind: str, error_type: str
) -> None:
    """Two failures then an answer: 3 requests at the server, 2 error events then a model_call."""
    phase(sim, {FAULTY: {"fail_first": 2, "fail_kind": kind}})
    reply = call_model(spec_for(sim), ask(), options=options(max_retries=3))

    assert reply.text == "I am not sure."
    assert [e.kind for e in reply.events] == ["error", "error", "model_call"]
    assert [e.attempt for e in reply.events] == [1, 2, 3]
    assert [e.error_type for e in reply.events[:2]] == [error_type, error_type]
    assert all(e.error_message for e in reply.events[:2])
    stats = model_stats(sim)
    assert stats["requests"] == 3
    assert stats["faults"] == {kind: 2}


def test_connection_reset_is_a_connection_error(sim: SimulatorProcess) -> None:
    """A reset reaches glow as litellm's connection error (no HTTP status from the server)."""
    phase(sim, {FAULTY: {"fail_first": 1, "fail_kind": "reset"}})
    with pytest.raises(ModelCallError) as info:
        call_model(spec_for(sim), ask(), options=options(max_retries=0))
    assert "Connection error" in info.value.message
    assert model_stats(sim)["faults"] == {"reset": 1}


def test_retry_after_seconds_is_honoured(sim: SimulatorProcess) -> None:
    """A 429 with `Retry-After: 1` waits ~1 s before the retry, not the 10 ms backoff."""
    phase(sim, {FAULTY: {"fail_first": 1, "fail_kind": "429", "retry_after_s": 1}})
    started = time.monotonic()
    reply = call_model(spec_for(sim), ask(), options=options(max_retries=2))
    elapsed = time.monotonic() - started

    assert 0.95 <= retry_wait_s(reply) < 1.5
    assert 1.0 <= elapsed < 3.0
    assert [e.kind for e in reply.events] == ["error", "model_call"]
    assert reply.events[0].error_type == "RateLimitError"
    assert model_stats(sim)["requests"] == 2


def test_retry_after_http_date_is_honoured(sim: SimulatorProcess) -> None:
    """`Retry-After: <HTTP-date>` 2 s ahead (1-2 s after rounding to whole seconds) is waited."""
    faults = {"fail_first": 1, "fail_kind": "429", "retry_after_s": 2}
    phase(sim, {FAULTY: {**faults, "retry_after_form": "http-date"}})
    reply = call_model(spec_for(sim), ask(), options=options(max_retries=2))
    assert 0.9 <= retry_wait_s(reply) < 2.5


def test_retry_after_ms_is_honoured(sim: SimulatorProcess) -> None:
    """`retry-after-ms: 1000` alone makes the retry wait ~1 s."""
    faults = {"fail_first": 1, "fail_kind": "429", "retry_after_s": 1}
    phase(sim, {FAULTY: {**faults, "retry_after_form": "ms"}})
    reply = call_model(spec_for(sim), ask(), options=options(max_retries=2))
    assert 0.95 <= retry_wait_s(reply) < 1.5


def test_exhausted_retries_raise_the_final_error(sim: SimulatorProcess) -> None:
    """A model failing every time: max_retries + 1 requests, then the last error's type/text."""
    phase(sim, {FAULTY: {"503": 1.0}})
    with pytest.raises(ModelCallError) as info:
        call_model(spec_for(sim), ask(), options=options(max_retries=2))
    error = info.value
    assert error.error_type == "ServiceUnavailableError"
    assert "overloaded" in error.message
    assert str(error).startswith("ServiceUnavailableError: ")
    assert [e.kind for e in error.events] == ["error"] * 3
    assert [e.attempt for e in error.events] == [1, 2, 3]
    assert model_stats(sim)["requests"] == 3


def test_mixed_fault_rates_every_attempt_is_in_the_trace(sim: SimulatorProcess) -> None:
    """A 40% mix of transient faults: every call ends answered, and glow's error events match
    the faults the server injected one for one (sequential calls, seeded draws: no flakiness)."""
    rates = {"500": 0.1, "reset": 0.1, "malformed": 0.05, "empty": 0.05, "429_no_retry_after": 0.1}
    phase(sim, {FAULTY: {**rates, "seed": 11}})
    replies: list[ModelReply] = [
        call_model(spec_for(sim), ask(f"Question {i}?"), options=options(max_retries=8))
        for i in range(15)
    ]
    errors = [e for r in replies for e in r.events if e.kind == "error"]
    stats = model_stats(sim)
    assert all(r.events[-1].kind == "model_call" for r in replies)
    assert len(errors) == sum(stats["faults"].values()) > 0
    assert stats["requests"] == sum(len(r.events) for r in replies)


# --------------------------------------------------------------------------- not retried


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("401", "AuthenticationError"),
        ("400", "BadRequestError"),
        ("context", "ContextWindowExceededError"),
    ],
)
def test_final_errors_are_not_retried(sim: SimulatorProcess, kind: str, error_type: str) -> None:
    """Auth, bad-request and context-window errors fail at once: exactly one request."""
    phase(sim, {FAULTY: {"fail_first": 5, "fail_kind": kind}})
    with pytest.raises(ModelCallError) as info:
        call_model(spec_for(sim), ask(), options=options(max_retries=3))
    assert info.value.error_type == error_type
    assert len(info.value.events) == 1
    assert model_stats(sim)["requests"] == 1


def test_echoed_key_is_masked_everywhere(
    sim: SimulatorProcess, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The 401 echoes the planted key; it is in no message, event, traceback or log line."""
    phase(sim, {FAULTY: {"fail_first": 1, "fail_kind": "401"}})
    with pytest.raises(ModelCallError) as info:
        call_model(spec_for(sim), ask(), options=options(max_retries=2))
    error = info.value
    assert "Incorrect API key provided: ***" in error.message  # the echo happened, masked
    outputs = {
        "str(error)": str(error),
        "error.message": error.message,
        "events": events_json(error.events),
        "traceback": "".join(traceback.format_exception(error)),
        "logs": caplog.text,
        "stdout/stderr": "".join(capfd.readouterr()),
    }
    # The provider's own exception (unmasked) must not ride along as a chained context, where
    # any logger that prints the traceback with its causes would show it.
    chained, seen = error.__context__ or error.__cause__, 0
    while chained is not None and seen < 10:
        outputs[f"chained[{seen}]"] = str(chained)
        chained, seen = chained.__context__ or chained.__cause__, seen + 1
    leaked = [where for where, text in outputs.items() if FAKE_KEY in text]
    assert not leaked, f"the key leaked into {leaked}"


# --------------------------------------------------------------------------- timeouts


def test_per_call_timeout_ends_a_hang(sim: SimulatorProcess) -> None:
    """A 10 s hang with timeout_s=1 and no retries fails within ~3 s as a litellm Timeout."""
    phase(sim, {FAULTY: {"fail_first": 1, "fail_kind": "hang", "hang_s": 10}})
    started = time.monotonic()
    with pytest.raises(ModelCallError) as info:
        call_model(spec_for(sim), ask(), options=options(timeout_s=1.0, max_retries=0))
    assert time.monotonic() - started < 3.0
    assert info.value.error_type == "Timeout"
    # The server saw the client give up and stopped hanging (nothing stays in flight).
    deadline = time.monotonic() + 3.0
    while model_stats(sim)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model_stats(sim)["in_flight"] == 0


def test_timeout_is_retried(sim: SimulatorProcess) -> None:
    """A hung first attempt times out and the retry answers: [Timeout error, model_call]."""
    phase(sim, {FAULTY: {"fail_first": 1, "fail_kind": "hang", "hang_s": 10}})
    started = time.monotonic()
    reply = call_model(spec_for(sim), ask(), options=options(timeout_s=1.0, max_retries=1))
    assert time.monotonic() - started < 4.0
    assert [(e.kind, e.error_type) for e in reply.events] == [
        ("error", "Timeout"),
        ("model_call", None),
    ]


def test_deadline_bounds_retries_of_hangs(sim: SimulatorProcess) -> None:
    """Hang after hang with many retries allowed: the 2.5 s total deadline ends the call."""
    phase(sim, {FAULTY: {"fail_first": 20, "fail_kind": "hang", "hang_s": 10}})
    started = time.monotonic()
    with pytest.raises(ModelCallError) as info:
        call_model(
            spec_for(sim),
            ask(),
            options=options(timeout_s=1.0, max_retries=20, backoff_base_s=0.05, deadline_s=2.5),
        )
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, elapsed
    assert info.value.error_type in {"DeadlineExceeded", "Timeout"}
    assert 2 <= len(info.value.events) < 20


# --------------------------------------------------------------------------- concurrency


def test_model_slot_bounds_in_flight_on_one_event_loop(sim: SimulatorProcess) -> None:
    """8 concurrent calls on one loop (how the runner calls) with a limit of 2: the server
    never sees more than 2 of them at once, and does see 2 (the calls did overlap)."""
    phase(sim, {})
    opts = options(max_retries=0, slot=model_slot("faults-one-loop", SLOW, 2))

    async def burst() -> list[ModelReply]:
        calls = (acall_model(spec_for(sim, SLOW), ask(f"q{i}"), options=opts) for i in range(8))
        return await asyncio.gather(*calls)

    assert len(asyncio.run(burst())) == 8
    stats = model_stats(sim, SLOW)
    assert stats["requests"] == 8
    assert 1 < stats["max_in_flight"] <= 2


def test_model_slot_bounds_in_flight_across_threads(sim: SimulatorProcess) -> None:
    """8 threads each calling `call_model` with one limit-2 slot: at most 2 in flight."""
    phase(sim, {})
    opts = options(max_retries=0, slot=model_slot("faults-threads", SLOW, 2))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            call_model(spec_for(sim, SLOW), ask(f"t{i}"), options=opts)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    stats = model_stats(sim, SLOW)
    assert stats["requests"] == 8
    assert 1 < stats["max_in_flight"] <= 2


def test_slot_is_not_held_during_retry_after_wait(sim: SimulatorProcess) -> None:
    """Limit 1: while caller A waits out a 429's `Retry-After: 2`, caller B's call (same model,
    same slot) starts and completes; A then retries and answers."""
    faults = {"fail_first": 1, "fail_kind": "429", "retry_after_s": 2, "match": "caller A"}
    phase(sim, {FAULTY: faults})
    opts = options(max_retries=2, slot=model_slot("faults-backoff", FAULTY, 1))
    spec = spec_for(sim)

    async def timed(text: str, delay: float) -> float:
        await asyncio.sleep(delay)
        await acall_model(spec, ask(text), options=opts)
        return time.monotonic()

    async def both() -> tuple[float, float, float]:
        started = time.monotonic()
        a_done, b_done = await asyncio.gather(timed("caller A", 0.0), timed("caller B", 0.3))
        return started, a_done, b_done

    started, a_done, b_done = asyncio.run(both())
    assert b_done - started < 1.5, "B waited for A's backoff: the slot was held while waiting"
    assert a_done - started >= 2.0
    stats = model_stats(sim)
    assert stats["requests"] == 3 and stats["faults"] == {"429": 1}
    assert stats["max_in_flight"] == 1


def test_sustained_429s_slow_a_model_down_then_it_recovers(sim: SimulatorProcess) -> None:
    """A burst of 429s cuts the model's slots; answers in a row give them back, up to the max."""
    slot = model_slot("faults-adaptive", SLOW, 8)
    seen: list[int] = []

    async def main() -> None:
        async def watch() -> None:
            while True:
                seen.append(slot.slots.allowed)  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        opts = options(max_retries=10, slot=slot)
        spec = spec_for(sim, SLOW)
        phase(sim, {SLOW: {"fail_first": 16, "fail_kind": "429", "retry_after_s": 0.05}})
        await asyncio.gather(*(acall_model(spec, ask(f"a{i}"), options=opts) for i in range(16)))
        throttled = min(seen)
        phase(sim, {SLOW: {}})
        for _ in range(4):  # enough answers in a row to climb back to 8
            calls = (acall_model(spec, ask(f"b{i}"), options=opts) for i in range(16))
            await asyncio.gather(*calls)
        watcher.cancel()
        assert throttled < 8, seen
        assert slot.slots.allowed == 8  # type: ignore[attr-defined]

    asyncio.run(main())
    assert model_stats(sim, SLOW)["max_in_flight"] <= 8
