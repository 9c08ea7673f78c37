"""Runner (c): Inspect AI on the same samples, `includes()` scorer, max_connections = concurrency.

The model is Inspect's generic OpenAI-compatible provider (`openai-api/sim/<model>`) pointed at
the simulator by SIM_BASE_URL / SIM_API_KEY (a fake key); logs go to the bench's temp dir and no
telemetry hook is set, so nothing leaves 127.0.0.1. With --agent the calculator is offered as an
Inspect tool and `generate()` loops over tool calls like Glow's agent does.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.measure import emit
from bench.workload import MODEL, SIM_KEY, read_scenarios


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--agent", action="store_true")
    args = parser.parse_args()
    os.environ["SIM_BASE_URL"] = args.url
    os.environ["SIM_API_KEY"] = SIM_KEY
    os.environ.pop("INSPECT_TELEMETRY", None)
    os.environ.pop("INSPECT_API_KEY_OVERRIDE", None)
    t0 = time.perf_counter()
    from inspect_ai import Task, eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import tool

    @tool
    def calculator():  # noqa: ANN202 - Inspect's tool protocol
        async def execute(expression: str) -> str:
            """Evaluate an arithmetic expression exactly.

            Args:
                expression: e.g. "1234 * 5678".
            """
            from glow.tools import calculator as calc

            return str(calc(expression))

        return execute

    imported = time.perf_counter() - t0
    samples = [
        Sample(id=str(s["id"]), input=str(s["input"]), target=str(s["reference"]))
        for s in read_scenarios(args.scenarios)
    ]
    solver = [use_tools(calculator()), generate()] if args.agent else [generate()]
    task = Task(dataset=MemoryDataset(samples), solver=solver, scorer=includes(), name="bench")
    started = time.perf_counter()
    logs = eval(
        task,
        model=f"openai-api/sim/{MODEL}",
        max_connections=args.concurrency,
        max_samples=args.concurrency,
        log_dir=args.log_dir,
        display="none",
        max_retries=0,
        fail_on_error=False,
    )
    run_wall = time.perf_counter() - started
    scores: dict[str, int] = {}
    for sample in logs[0].samples or []:
        score = (sample.scores or {}).get("includes")
        scores[str(sample.id)] = int(score.value == "C") if score is not None else -1
    emit({"run_wall_s": run_wall, "import_s": imported, "status": logs[0].status, "scores": scores})


if __name__ == "__main__":
    main()
