"""Bad test files fail before any model call, with one clear message naming file, line, field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from glow.errors import SpecError
from glow.spec import load_test

SCENARIO = {"id": "s1", "input": "What is 2 + 2?", "reference": "4", "metadata": {"category": "x"}}
MODEL = {"name": "m1", "model": "openai/sim-echo", "api_base": "http://127.0.0.1:9/v1"}


def write(tmp: Path, spec: dict[str, Any] | str, scenarios: list[Any] | None = None) -> Path:
    scenario_file = tmp / "scenarios.jsonl"
    lines = [json.dumps(s) if not isinstance(s, str) else s for s in (scenarios or [SCENARIO])]
    scenario_file.write_text("\n".join(lines) + "\n")
    path = tmp / "test.yaml"
    if isinstance(spec, dict):
        spec = yaml.safe_dump({"scenarios": str(scenario_file), **spec}, sort_keys=False)
    path.write_text(spec)
    return path


def base(**overrides: Any) -> dict[str, Any]:
    return {"name": "t", "models": [MODEL], "rubric": "exact_answer", **overrides}


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_test(path)
    return str(info.value)


def test_a_good_file_loads(tmp_path: Path) -> None:
    loaded = load_test(write(tmp_path, base()))
    assert loaded.spec.name == "t" and [s.id for s in loaded.scenarios] == ["s1"]
    assert loaded.rubric.name == "exact_answer"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (base(models=[{**MODEL, "nmae": "x"}]), ["test.yaml:", "models[0].nmae", "unknown field"]),
        (base(concurrency="many"), ["concurrency", "integer"]),
        (base(concurrency=-1), ["concurrency", "greater than or equal to 1"]),
        (base(models=[MODEL, MODEL]), ["duplicate models names: m1"]),
        (base(rubric="no_such_rubric"), ["rubric", "no_such_rubric", "exact_answer"]),
        (base(models=[{**MODEL, "params": {"api_key": "sk-x"}}]), ["params.api_key", "env var"]),
        (base(rubric="judged_free_text"), ["judge", "llm_judge"]),
        ({"models": [MODEL], "rubric": "exact_answer"}, ["name", "Field required"]),
        (base(agents=[{"name": "a", "tools": ["glow.nothing:here"]}]), ["agents[0].tools[0]"]),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, spec: dict[str, Any], expected: list[str]) -> None:
    message = error_of(write(tmp_path, spec))
    for fragment in expected:
        assert fragment in message, message


def test_unknown_field_points_at_its_line(tmp_path: Path) -> None:
    text = "name: t\nscenarios: s.jsonl\nrubric: exact_answer\nmodels:\n  - name: m\n    modle: x\n"
    message = error_of(write(tmp_path, text))
    assert f"{tmp_path / 'test.yaml'}:6: models[0].modle: unknown field" in message
    assert f"{tmp_path / 'test.yaml'}:5: models[0].model: Field required" in message


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: t\nmodels: [\n  - oops: : :\n"))
    assert "test.yaml:" in message and "invalid YAML" in message


def test_missing_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({**base(), "scenarios": "nowhere.jsonl"}))
    assert "nowhere.jsonl" in error_of(path) and "not found" in error_of(path)


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, base(), [SCENARIO, '{"id": "s2", "input": ']))
    assert "scenarios.jsonl:2: invalid JSON" in message
    message = error_of(write(tmp_path, base(), [SCENARIO, {"id": "s2"}]))
    assert "scenarios.jsonl:2: input: Field required" in message


def test_duplicate_scenario_ids(tmp_path: Path) -> None:
    assert "duplicate scenario id 's1'" in error_of(write(tmp_path, base(), [SCENARIO, SCENARIO]))


def test_missing_image_file(tmp_path: Path) -> None:
    scenario = {
        "id": "v1",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "colour?"},
                    {"type": "image", "image": "data/images/no.png"},
                ],
            }
        ],
    }
    message = error_of(write(tmp_path, base(), [scenario]))
    assert "scenario 'v1'" in message and "data/images/no.png" in message


def test_rubric_errors_name_the_standard(tmp_path: Path) -> None:
    rubric = tmp_path / "r.yaml"
    rubric.write_text(
        yaml.safe_dump(
            {
                "name": "r",
                "standards": [{"name": "re", "kind": "regex", "params": {"pattern": "("}}],
            }
        )
    )
    message = error_of(write(tmp_path, base(rubric=str(rubric))))
    assert "standards[0].params.pattern" in message and "invalid regex" in message
    rubric.write_text(yaml.safe_dump({"name": "r", "standards": [{"name": "x", "kind": "nope"}]}))
    message = error_of(write(tmp_path, base(rubric=str(rubric))))
    assert "nope" in message and "exact" in message  # names the known kinds


def test_cli_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, base(models=[{**MODEL, "nmae": "x"}]))
    db = tmp_path / "store" / "glow.db"
    env = {**os.environ, "GLOW_DATABASE_URL": f"sqlite:///{db}", "GLOW_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "glow.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "models[0].nmae: unknown field" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not db.exists()


def test_missing_key_env_var_is_refused_up_front(tmp_path: Path) -> None:
    from glow.spec import preflight

    loaded = load_test(write(tmp_path, base(models=[{**MODEL, "api_key_env": "NO_SUCH_KEY_X"}])))
    with pytest.raises(SpecError, match="NO_SUCH_KEY_X"):
        preflight(loaded)


@pytest.mark.parametrize(
    ("field", "model", "expected"),
    [
        ("models", {**MODEL, "model": "nosuchprovider/x"}, "models[0].model: litellm does not"),
        ("judge", {"name": "j", "model": "openai/no-such-judge-9"}, "judge.model: 'openai/no-such"),
    ],
)
def test_unknown_models_are_refused_before_any_call(
    tmp_path: Path, field: str, model: dict[str, Any], expected: str
) -> None:
    from glow.spec import preflight

    spec = base(models=[model]) if field == "models" else base(judge=model)
    loaded = load_test(write(tmp_path, spec))
    with pytest.raises(SpecError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        preflight(loaded)
