"""Runner (b): a bare asyncio loop of litellm `acompletion` calls, graded inline.

The reference for "close to a bare litellm loop": one event loop, an asyncio.Semaphore of the
bench's concurrency, the same exact-match normalisation as Glow's `exact` standard, and (with
--agent) the same tool loop as Glow's agent: call, run the calculator, call again, <= 3 turns.
"""

from __future__ import annotations

import argparse
import os
import time
import unicodedata

# Before litellm is imported: no price-map download, no tokenizer download.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"

import asyncio  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.measure import emit  # noqa: E402
from bench.workload import MODEL, SIM_KEY, read_scenarios  # noqa: E402

CALCULATOR_SCHEMA = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression exactly.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def normalise(text: str) -> str:
    """Glow's `exact` leniencies: no punctuation, lower case, single spaces, stripped."""
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.lower().split())


async def run(
    scenarios: list[dict[str, Any]], url: str, concurrency: int, max_turns: int
) -> dict[str, int]:
    import litellm

    from glow.tools import calculator

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    semaphore = asyncio.Semaphore(concurrency)
    tools = [CALCULATOR_SCHEMA] if max_turns > 1 else None

    async def one(item: dict[str, Any]) -> tuple[str, int]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": item["input"]}]
        answer = ""
        async with semaphore:
            for turn in range(1, max_turns + 1):
                response = await litellm.acompletion(
                    model=f"openai/{MODEL}",
                    messages=messages,
                    tools=tools,
                    api_base=url,
                    api_key=SIM_KEY,
                    timeout=60,
                    max_retries=0,
                )
                message = response.choices[0].message
                answer = message.content or ""
                calls = message.tool_calls or []
                if not calls or turn == max_turns:
                    break
                messages.append(message.model_dump(exclude_none=True))
                for call in calls:
                    arguments = json.loads(call.function.arguments or "{}")
                    result = str(calculator(**arguments))
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        correct = normalise(answer) == normalise(str(item["reference"]))
        return str(item["id"]), int(correct)

    results = await asyncio.gather(*(one(item) for item in scenarios), return_exceptions=True)
    scores: dict[str, int] = {}
    for item, result in zip(scenarios, results, strict=True):
        scores[str(item["id"])] = result[1] if isinstance(result, tuple) else -1
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    import litellm  # noqa: F401 - import cost measured separately from the run

    imported = time.perf_counter() - t0
    scenarios = read_scenarios(args.scenarios)
    started, cpu = time.perf_counter(), time.process_time()
    scores = asyncio.run(run(scenarios, args.url, args.concurrency, args.max_turns))
    emit(
        {
            "run_wall_s": time.perf_counter() - started,
            "run_cpu_s": time.process_time() - cpu,
            "import_s": imported,
            "scores": scores,
        }
    )


if __name__ == "__main__":
    main()
