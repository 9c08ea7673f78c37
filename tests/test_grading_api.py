"""Grading through the HTTP API (issue 11, points 1, 6 and 9): `invocation_run` of an invocation
that failed in grading grades its recorded output again without calling the model, and
`invocation_complete` grades through the rubric's own grading, in one transaction.

Real parts: a `glow serve` subprocess (tests/api_harness.py) on the session's Prefect test
server, litellm over HTTP to the bundled simulator, a judge simulator of its own that is down and
then comes back on the same port, and the server's SQLite store read directly.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import api_harness
import httpx
import pytest
from api_harness import Api

pytestmark = pytest.mark.usefixtures("prefect_server")
api = api_harness.api  # the module-scoped `glow serve` fixture

ANSWER = "The Eiffel Tower is in Paris, the capital of France."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def judged_spec(api: Api, name: str, judge_base: str) -> dict[str, Any]:
    """One free-text and one exact scenario, graded by the quickstart's mixed rubric."""
    common = {
        "api_key_env": "GLOW_SIM_API_KEY",
        "prices": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7},
    }
    return {
        "name": name,
        "scenarios": [
            {
                "id": "free",
                "input": "In one sentence: where is the Eiffel Tower?",
                "reference": "Paris",
                "metadata": {"category": "free_text"},
            },
            {
                "id": "sum",
                "input": "What is 2 + 2?",
                "reference": "4",
                "metadata": {"category": "exact"},
            },
        ],
        "models": [
            {"name": "strong", "model": "openai/sim-strong", "api_base": api.sim_url, **common}
        ],
        "judge": {
            "name": "sim-judge",
            "model": "openai/sim-judge",
            "api_base": judge_base,
            **common,
        },
        "rubric": "quickstart",
        "timeout_s": 30,
        "max_retries": 1,
    }


def create(api: Api, spec: dict[str, Any]) -> dict[str, str]:
    test_id = api.ok("create", spec)["test"]["test_id"]
    rows = api.ok("invocations", {"test_id": test_id, "page_size": 50})["invocations"]
    return {r["scenario_id"]: r["invocation_id"] for r in rows}


def test_invocation_run_of_a_judge_error_grades_without_the_model(api: Api) -> None:
    from glow.simulator import SimulatorProcess

    port = free_port()
    ids = create(api, judged_spec(api, "judge-down", f"http://127.0.0.1:{port}/v1"))
    free = ids["free"]
    api.ok("invocation_run", {"invocation_id": free})
    inv = api.wait_status(free, {"completed", "failed"}, timeout=60)
    assert inv["status"] == "failed" and inv["error_type"] == "judge_error", inv
    assert "sim-judge" in inv["error_message"] and inv["output"] and inv["score"] is None

    with SimulatorProcess(port=port) as judge:
        model_before = api.sim_requests("sim-strong")
        again = api.ok("invocation_run", {"invocation_id": free})
        assert again["run_number"] == 2
        done = api.wait_status(free, {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed" and done["score"] is not None, done
        assert api.sim_requests("sim-strong") == model_before
        assert judge.stats()["models"]["sim-judge"]["requests"] == 1
    assert (
        done["output"] == inv["output"] and done["runs"][-1]["trace"][0]["name"] == "graded again"
    )


def test_invocation_complete_grades_through_the_rubric(api: Api) -> None:
    import rubrics
    from glow.models import Scenario

    ids = create(api, judged_spec(api, "complete-by-hand", api.sim_url))
    free = ids["free"]
    # Refused, and nothing written: a judged standard left out (no judge is called here), a
    # standard the category filter leaves out, a standard the rubric does not have.
    refused = [
        (free, {"mentions_reference": 1.0}, "needs a judge call"),
        (ids["sum"], {"choice": 1.0}, "does not apply"),
        (ids["sum"], {"nope": 1.0}, "not a standard"),
    ]
    for inv_id, scores, why in refused:
        body = {"invocation_id": inv_id, "output": ANSWER, "scores": scores}
        response = api.post("invocation_complete", body)
        assert response.status_code == 422 and why in response.text, response.text
        assert api.ok("invocation_get", {"invocation_id": inv_id})["runs"] == []

    # A supplied judge score (weight 3) and the rubric's own `mentions_reference` (weight 1):
    # not the mean of the supplied scores alone.
    done = api.ok(
        "invocation_complete", {"invocation_id": free, "output": ANSWER, "scores": {"judge": 0.5}}
    )
    assert done["status"] == "completed"
    assert done["scores"] == {"judge": 0.5, "mentions_reference": 1.0}
    assert done["score"] == pytest.approx((3 * 0.5 + 1 * 1.0) / 4) and done["passed"] is True
    expected = rubrics.grade(
        rubrics.load_rubric("quickstart"),
        rubrics.GradingContext(
            Scenario(id="free", input="q", reference="Paris", metadata={"category": "free_text"}),
            ANSWER,
        ),
        {"judge": 0.5},
    )
    assert done["score"] == pytest.approx(expected.score)

    # No scores: the rubric grades the output (exact_answer only, for the exact category).
    sum_done = api.ok("invocation_complete", {"invocation_id": ids["sum"], "output": "4"})
    assert sum_done["scores"] == {"exact_answer": 1.0} and sum_done["score"] == 1.0


def test_invocation_complete_with_an_unencodable_output_writes_nothing(api: Api) -> None:
    ids = create(api, judged_spec(api, "complete-surrogate", api.sim_url))
    inv_id = ids["sum"]
    before = api.ok("invocation_get", {"invocation_id": inv_id})
    # JSON's own escape for a lone surrogate (json.dumps writes it as \\ud800), as any client
    # may send it: it decodes to text no UTF-8 store column can hold.
    body = json.dumps({"invocation_id": inv_id, "output": "4\ud800"})
    response = httpx.post(
        f"{api.url}/test/invocation_complete",
        content=body.encode(),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "output" in response.text
    after = api.ok("invocation_get", {"invocation_id": inv_id})
    assert after["status"] == before["status"] == "queued"
    assert after["runs"] == [] and after["attempts"] == 0
    # And the invocation can still be completed properly afterwards.
    done = api.ok("invocation_complete", {"invocation_id": inv_id, "output": "4"})
    assert done["status"] == "completed" and len(done["runs"]) == 1
