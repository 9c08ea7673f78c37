"""Calling a model through litellm, and recording each call for the trace.

This is the one place that retries (litellm's and the openai SDK's own retries are switched
off): transient errors back off exponentially with jitter, honouring Retry-After, bounded by the
test's `max_retries`; auth errors, bad requests and context-window errors are not retried.
The key is resolved here at call time and never leaves this module: requests are recorded
without it, and any echo of it, or of any credential variable in the environment, in an error
message is masked. A model with its own `api_base` gets only the key its test names, never one
litellm would pick up from the environment.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from glow.budget import Budget
from glow.models import Generation, ModelSpec, TraceEvent
from glow.secrets import install_log_redaction, redact

# litellm fetches its price map and tokenizers from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

_litellm_lock = threading.Lock()
_litellm: Any = None


def litellm() -> Any:
    """Import litellm once, lazily: it costs seconds, and commands that only talk HTTP skip it."""
    global _litellm
    if _litellm is None:
        with _litellm_lock:
            if _litellm is None:
                import litellm as module

                module.suppress_debug_info = True
                module.drop_params = True
                module.telemetry = False
                install_log_redaction()  # litellm and Prefect log provider errors verbatim
                _litellm = module
    return _litellm


class ModelCallError(Exception):
    """A model call that failed for good (after retries). Carries the recorded attempts."""

    def __init__(self, error_type: str, message: str, events: list[TraceEvent]) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.events = events


@dataclass
class ModelReply:
    """The final answer of one call, and what it cost."""

    message: dict[str, Any]
    events: list[TraceEvent]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0

    @property
    def text(self) -> str:
        return self.message.get("content") or ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return self.message.get("tool_calls") or []

    def generation(
        self,
        model: ModelSpec,
        *,
        test_id: str,
        invocation_id: str,
        run_id: str,
        role: Literal["model", "judge"] = "model",
        standard: str | None = None,
    ) -> Generation:
        """This call as the ledger's `Generation` row (the model's or a judge's): the one place
        a reply becomes the row that carries tokens and cost."""
        return Generation(
            test_id=test_id,
            invocation_id=invocation_id,
            run_id=run_id,
            role=role,
            model=model.name,
            litellm_model=model.model,
            provider=model.provider,
            standard=standard,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            latency_s=self.latency_s,
        )


@dataclass
class CallOptions:
    timeout_s: float = 60.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Held only while a request is on the wire (see glow.limits), never during a backoff wait.
    slot: Callable[[], AbstractAsyncContextManager[Any]] = field(default=nullcontext)
    # A total deadline for the logical call, retries and waits included; None: attempts bound it.
    deadline_s: float | None = None
    # The same as a time.monotonic() instant, shared by all calls made with these options (an
    # invocation's agent turns): wins over deadline_s.
    deadline_at: float | None = None
    # The test's spending limit: checked before each attempt starts, charged when one answers.
    budget: Budget | None = None
    # Shared with other tests and processes through a Prefect global concurrency limit.
    provider_slot: Callable[[], AbstractAsyncContextManager[Any]] = field(default=nullcontext)


_NOT_RETRIED = (
    "AuthenticationError",
    "PermissionDeniedError",
    "BadRequestError",
    "NotFoundError",
    "ContextWindowExceededError",
    "UnprocessableEntityError",
    "ContentPolicyViolationError",
    "UnsupportedParamsError",
)


_secret_keys: dict[str, str] = {}  # Prefect Secret block name -> value, loaded once per process


# Sent to a custom api_base when the test names no key. litellm reads the provider's variable
# (OPENAI_API_KEY, ANTHROPIC_API_KEY, HOSTED_VLLM_API_KEY...) whenever the key it is given is
# None or empty, and would hand the operator's key to whatever address the test names; a
# placeholder is the one value that stops it on every provider (local servers ignore it).
NO_KEY = "glow-no-key"


async def resolve_key(spec: ModelSpec) -> str | None:
    """The key to call `spec` with: its env var, its Prefect Secret block (loaded once), or none.

    None lets litellm use the provider's own variable, which only happens for the provider's
    own endpoint: a model with a custom `api_base` and no key named gets `NO_KEY` instead.
    """
    key = await _named_key(spec)
    if key is None and spec.api_base is not None:
        return NO_KEY
    return key


async def _named_key(spec: ModelSpec) -> str | None:
    if spec.api_key_env:
        return os.environ.get(spec.api_key_env)
    if spec.api_key_secret:
        if spec.api_key_secret not in _secret_keys:
            from prefect.blocks.system import Secret

            block = await Secret.aload(spec.api_key_secret)
            _secret_keys[spec.api_key_secret] = str(block.get())
        return _secret_keys[spec.api_key_secret]
    return None


def mask(text: str, secret: str | None) -> str:
    """`text` without `secret` (the call's key) nor any credential variable's value."""
    return redact(text, [secret if secret != NO_KEY else None])


def is_retryable(exc: BaseException) -> bool:
    name = type(exc).__name__
    if name in _NOT_RETRIED:
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
        return False
    return True


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a provider asked for, in seconds, or None.

    Reads `retry-after-ms` first (OpenAI and Azure send it; the openai SDK prefers it), then
    `retry-after` as seconds or as an HTTP date (RFC 9110 allows both).
    """
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


UNPRICED = "glow_unpriced"  # marks the price-map entries `prepare_pricing` adds for unknown models
_prepared: dict[str, bool] = {}


def price_known(lib: Any, model: str) -> bool:
    """Whether litellm's bundled price map prices `model` (Glow's own placeholders excluded)."""
    for name in (model, model.split("/", 1)[-1]):
        entry = lib.model_cost.get(name)
        if entry is not None and not entry.get(UNPRICED):
            return True
    return False


def prepare_pricing(lib: Any, model: str) -> bool:
    """Make litellm's per-call cost lookup cheap for `model`; return whether its map prices it.

    litellm prices every response, twice, and for a model missing from its map each lookup
    fails through a chain of exceptions, a large share of litellm's own overhead per call
    (bench/PROFILE.md). Registering a missing model once, at zero and marked UNPRICED,
    makes the lookup a dict hit. Glow never reads that zero: its cost comes from the spec's
    `prices`, or stays None.
    """
    known = _prepared.get(model)
    if known is None:
        with _litellm_lock:
            known = price_known(lib, model)
            if not known:
                costs = (
                    "input_cost_per_token",
                    "output_cost_per_token",
                    "cache_creation_input_token_cost",
                    "cache_read_input_token_cost",
                )
                placeholder = {**dict.fromkeys(costs, 0.0), "mode": "chat", UNPRICED: True}
                lib.register_model({model: placeholder})
            _prepared[model] = known
    return known


def _price(
    spec: ModelSpec, response: Any, input_tokens: int, output_tokens: int, *, known: bool
) -> float | None:
    """Spec prices win; else litellm's bundled map; unknown stays None (never 0)."""
    if spec.prices is not None:
        return (
            input_tokens * spec.prices.input_cost_per_token
            + output_tokens * spec.prices.output_cost_per_token
        )
    if not known:
        return None  # litellm answers 0 from the placeholder; the truth is "unknown"
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    return float(cost) if cost is not None else None


def call_model(
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    options: CallOptions | None = None,
) -> ModelReply:
    """`acall_model` for synchronous callers (scripts, tests); not for use inside a loop."""
    return asyncio.run(acall_model(spec, messages, tools=tools, options=options))


async def acall_model(
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    options: CallOptions | None = None,
) -> ModelReply:
    """One logical model call: attempts with backoff until an answer or a final error.

    Async on purpose: a benchmark keeps dozens of calls in flight, and one event loop carries
    them with far less CPU than a thread each (litellm's own CPU is the floor).
    """
    options = options or CallOptions()
    lib = litellm()
    priced = prepare_pricing(lib, spec.model)
    key = await resolve_key(spec)
    params = dict(spec.params)
    request_record: dict[str, Any] = {"model": spec.model, "messages": messages, "params": params}
    if tools:
        request_record["tools"] = [t["function"]["name"] for t in tools]
    events: list[TraceEvent] = []
    deadline = options.deadline_at
    if deadline is None and options.deadline_s is not None:
        deadline = time.monotonic() + options.deadline_s
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        timeout = options.timeout_s
        if deadline is not None:
            timeout = max(0.1, min(timeout, deadline - time.monotonic()))
        if options.budget is not None:
            options.budget.check()
        try:
            async with options.slot(), options.provider_slot():
                response = await lib.acompletion(
                    model=spec.model,
                    messages=messages,
                    tools=tools or None,
                    api_base=spec.api_base,
                    api_key=key,
                    timeout=timeout,
                    num_retries=0,
                    max_retries=0,
                    **params,
                )
            latency = time.perf_counter() - started
            choices = getattr(response, "choices", None) or []
            if not choices:
                raise EmptyResponseError("the provider returned no choices")
            message = choices[0].message.model_dump(exclude_none=True)
            message.pop("function_call", None)
            usage = getattr(response, "usage", None)
            input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            cost = _price(spec, response, input_tokens, output_tokens, known=priced)
            if hasattr(options.slot, "succeeded"):
                options.slot.succeeded()
            if options.budget is not None:
                options.budget.charge(cost)
            events.append(
                TraceEvent(
                    kind="model_call",
                    request=request_record,
                    response={"message": message, "finish_reason": choices[0].finish_reason},
                    usage={"input_tokens": input_tokens, "output_tokens": output_tokens},
                    cost_usd=cost,
                    latency_s=latency,
                    attempt=attempt,
                    name=spec.name,
                )
            )
            return ModelReply(message, events, input_tokens, output_tokens, cost, latency)
        except Exception as exc:  # noqa: BLE001 - every provider error is recorded, then judged
            latency = time.perf_counter() - started
            error_type = type(exc).__name__
            message_text = mask(str(exc), key)[:2000]
            events.append(
                TraceEvent(
                    kind="error",
                    request=request_record,
                    latency_s=latency,
                    attempt=attempt,
                    name=spec.name,
                    error_type=error_type,
                    error_message=message_text,
                )
            )
            final: ModelCallError | None = None
            wait = 0.0
            if getattr(exc, "status_code", None) == 429 and hasattr(options.slot, "rate_limited"):
                options.slot.rate_limited()
            if attempt > options.max_retries or not is_retryable(exc):
                final = ModelCallError(error_type, message_text, events)
            else:
                asked = retry_after_s(exc)
                if asked is None:
                    wait = min(options.backoff_max_s, options.backoff_base_s * 2 ** (attempt - 1))
                    wait *= 0.5 + random.random()  # jitter, so retries of many cells spread out
                else:
                    wait = min(asked, options.backoff_max_s)
                if deadline is not None and time.monotonic() + wait >= deadline:
                    final = ModelCallError(
                        "DeadlineExceeded",
                        f"gave up after {attempt} attempt(s): the deadline (deadline_s) "
                        "would pass before the next retry "
                        f"(last error: {error_type}: {message_text[:300]})",
                        events,
                    )
        # Raised outside the except block: a chained __context__ would carry the provider's
        # unmasked message (and with it, for a 401, the key) into any traceback that logs it.
        if final is not None:
            raise final
        await asyncio.sleep(wait)


class EmptyResponseError(Exception):
    """A response without choices: retried like a transient provider fault."""
