"""A bundled OpenAI-compatible model simulator, for the offline quickstart, the tests and benches.

Why: a benchmark runner must be exercised end to end (litellm's real HTTP transport, retries,
timeouts, concurrency, tool calls, judges, images) without a network or an API key. This package
is a small Starlette app, run by uvicorn on 127.0.0.1, that answers like a model would:

* Models are `Profile`s keyed by the request's `model` (litellm sends `openai/sim-strong` as
  `sim-strong`): an accuracy and a latency. Built in: `sim-strong`, `sim-fast`, `sim-judge`,
  `sim-echo`. An unknown model gets an OpenAI-style 404.
* It loads scenario files (`*.jsonl` of `glow.models.Scenario`) and indexes them by the text of
  their last user message. A request whose last user text matches is answered with the reference
  with probability `accuracy`, else with a plausibly wrong answer. The draw is a hash of
  (model, scenario id, request `seed`), so runs are reproducible.
* Tool scenarios (metadata `tool` + `expression`) first get a `tool_calls` reply, then an answer
  built from the tool result. Judge prompts (`[CRITERIA]`, `[QUESTION]`, `[REFERENCE]`, `[ANSWER]`
  marker lines) get `{"score": 0..10, "rationale": ...}` from token-overlap F1.
* `GET /stats` counts requests, the most concurrent in-flight requests and the faults injected
  (by kind) per model, so tests can assert concurrency limits and retries; `POST /stats/reset`.
* Faults (`Faults`, per model or `*`): 429 with/without Retry-After, 500/502/503, a connection
  reset, a hang, malformed JSON, empty choices, a slow stream, 401 echoing the key, 400 and a
  context-window error; as a deterministic script (`fail_first`) or seeded random rates. Set them
  with `--faults JSON`, `faults=` in Python, or at runtime with `POST /faults` (`GET` shows them,
  `DELETE` clears them), so one server can serve several test phases.

Run: `python -m glow.simulator --port 0` prints `GLOW_SIMULATOR_URL=http://127.0.0.1:<port>/v1`
once listening. From Python: `with SimulatorProcess() as sim: sim.url`, or `run_in_thread()`.

The modules, by concern:

* `profiles`: `Profile`, the built-in models, `--profile` parsing.
* `faults`: `Faults` (what to inject and when) and their JSON form.
* `scenarios`: loading scenario files (`load_scenarios`) and the index entry of a scenario.
* `replies`: judge scores, plausibly wrong answers, `Reply`.
* `core`: `Simulator`, the state and decisions independent of HTTP (reply, fault, counters).
* `responses`: OpenAI-shaped bodies, the status-code faults, the SSE stream.
* `app`: the Starlette app (`create_app`, `build_app`), resets and hangs.
* `process`: `run_in_thread`, `SimulatorProcess` (under `glow.lifeline`), HTTP control.
* `cli` / `__main__`: `python -m glow.simulator`.

Everything public is importable from `glow.simulator` itself.
"""

from glow.simulator.app import build_app, create_app
from glow.simulator.cli import main
from glow.simulator.core import ModelStats, Simulator
from glow.simulator.faults import (
    FAULT_KINDS,
    RETRY_AFTER_FORMS,
    FaultKind,
    Faults,
    FaultsArg,
    parse_faults,
)
from glow.simulator.process import (
    URL_PREFIX,
    SimulatorProcess,
    ThreadedSimulator,
    run_in_thread,
)
from glow.simulator.profiles import BUILTIN_PROFILES, Profile, parse_profile, resolve_profiles
from glow.simulator.replies import (
    GENERIC_REPLY,
    JUDGE_MARKERS,
    NO_IMAGE_REPLY,
    Reply,
    judge_reply,
    parse_judge_prompt,
    token_f1,
)
from glow.simulator.scenarios import (
    DEFAULT_SCENARIOS,
    PROJECT_ROOT,
    Entry,
    load_scenarios,
    normalize,
    scenario_last_user_text,
)

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_SCENARIOS",
    "FAULT_KINDS",
    "GENERIC_REPLY",
    "JUDGE_MARKERS",
    "NO_IMAGE_REPLY",
    "PROJECT_ROOT",
    "RETRY_AFTER_FORMS",
    "URL_PREFIX",
    "Entry",
    "FaultKind",
    "Faults",
    "FaultsArg",
    "ModelStats",
    "Profile",
    "Reply",
    "Simulator",
    "SimulatorProcess",
    "ThreadedSimulator",
    "build_app",
    "create_app",
    "judge_reply",
    "load_scenarios",
    "main",
    "normalize",
    "parse_faults",
    "parse_judge_prompt",
    "parse_profile",
    "resolve_profiles",
    "run_in_thread",
    "scenario_last_user_text",
    "token_f1",
]
