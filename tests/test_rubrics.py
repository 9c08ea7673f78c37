"""The rubrics package: each standard kind, rubric loading and its errors, and grading."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

import rubrics
from glow.errors import SpecError
from glow.models import ContentPart, Message, Rubric, Scenario, StandardSpec
from rubrics import (
    RUBRICS_DIR,
    Grade,
    GradingContext,
    StandardOutcome,
    _registry,
    grade,
    list_rubrics,
    load_rubric,
    standard_kind,
)
from rubrics.kinds import MARKERS, judge_messages, last_number, parse_judge_reply
from rubrics.kinds._choice import extract_letter

# --------------------------------------------------------------------------- helpers


def scenario(reference: str | list[str] | None = "Paris", **kw: Any) -> Scenario:
    return Scenario(id=kw.pop("id", "s1"), input=kw.pop("input", "Q?"), reference=reference, **kw)


def run_kind(
    kind: str,
    output: str | None,
    params: dict[str, Any] | None = None,
    *,
    sc: Scenario | None = None,
    call_judge: Any = None,
) -> StandardOutcome:
    """Grade `output` with one standard of `kind` through the public grade()."""
    rubric = Rubric(name="t", standards=[StandardSpec(name="s", kind=kind, params=params or {})])
    rubrics.validate_rubric(rubric)
    result = grade(rubric, GradingContext(sc or scenario(), output, call_judge=call_judge))
    (only,) = result.standards
    return StandardOutcome(score=only.score, rationale=only.rationale)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def rubric_yaml(standards: str) -> str:
    return "name: custom\nversion: '2'\npass_threshold: 0.5\nstandards:\n" + textwrap.indent(
        textwrap.dedent(standards), "  "
    )


# --------------------------------------------------------------------------- exact


@pytest.mark.parametrize(
    ("output", "params", "score"),
    [
        ("Paris", {}, 1.0),
        ("  paris \n", {}, 1.0),
        ("PARIS", {"case_sensitive": True}, 0.0),
        ("Paris.", {}, 0.0),
        ("Paris.", {"ignore_punctuation": True}, 1.0),
        ("Paris, France", {"ignore_punctuation": True}, 0.0),
        ("London", {}, 0.0),
        (None, {}, 0.0),
    ],
)
def test_exact(output: str | None, params: dict[str, Any], score: float) -> None:
    assert run_kind("exact", output, params).score == score


def test_exact_any_reference_and_whitespace() -> None:
    sc = scenario(["New York", "NYC"])
    assert run_kind("exact", "new   york", sc=sc).score == 1.0
    assert run_kind("exact", "nyc", sc=sc).score == 1.0
    assert run_kind("exact", "new   york", {"normalize_whitespace": False}, sc=sc).score == 0.0


def test_exact_without_reference_scores_zero_and_says_so() -> None:
    outcome = run_kind("exact", "Paris", sc=scenario(None))
    assert outcome.score == 0.0
    assert "no reference" in (outcome.rationale or "")


# --------------------------------------------------------------------------- contains


def test_contains() -> None:
    assert run_kind("contains", "The capital is PARIS.").score == 1.0
    assert run_kind("contains", "The capital is Lyon.").score == 0.0
    assert run_kind("contains", "The capital is PARIS.", {"case_sensitive": True}).score == 0.0
    assert run_kind("contains", "red and\n  blue", {"values": ["and blue"]}).score == 1.0


def test_contains_all() -> None:
    params = {"values": ["red", "green"], "all": True}
    assert run_kind("contains", "red and green", params).score == 1.0
    outcome = run_kind("contains", "red only", params)
    assert outcome.score == 0.0
    assert "green" in (outcome.rationale or "")
    assert run_kind("contains", "red only", {"values": ["red", "green"]}).score == 1.0


# --------------------------------------------------------------------------- regex


def test_regex_search_and_fullmatch() -> None:
    assert run_kind("regex", "id: AB-123 ok", {"pattern": r"[A-Z]{2}-\d+"}).score == 1.0
    assert run_kind("regex", "id: ab-123", {"pattern": r"[A-Z]{2}-\d+"}).score == 0.0
    flags = {"pattern": r"[A-Z]{2}-\d+", "flags": ["ignorecase"]}
    assert run_kind("regex", "id: ab-123", flags).score == 1.0
    full = {"pattern": r"\d+", "mode": "fullmatch"}
    assert run_kind("regex", "123\n", full).score == 1.0
    assert run_kind("regex", "x 123", full).score == 0.0


def test_regex_match_reference_uses_last_match() -> None:
    params = {"pattern": r"Answer:\s*(\w+)", "match_reference": True}
    sc = scenario("Paris")
    assert run_kind("regex", "Answer: Lyon? no. Answer: Paris", params, sc=sc).score == 1.0
    assert run_kind("regex", "Answer: Paris? no. Answer: Lyon", params, sc=sc).score == 0.0


def test_regex_invalid_pattern_fails_at_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        rubric_yaml(
            """\
            - name: ok
              kind: exact
            - name: re
              kind: regex
              params: {pattern: "("}
            """
        ),
    )
    with pytest.raises(SpecError) as err:
        load_rubric(str(path))
    message = str(err.value)
    assert "bad.yaml: standards[1].params.pattern: invalid regex '('" in message
    assert "missing )" in message


# --------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The total is 1,234.5.", 1234.5),
        ("x = -3", -3.0),
        ("\u22127 degrees", -7.0),
        ("about 3/4 of it", 0.75),
        ("first 2 then 10,000 apples", 10000.0),
        ("1.5e3", 1500.0),
        ("no digits here", None),
    ],
)
def test_last_number(text: str, number: float | None) -> None:
    assert last_number(text) == number


def test_numeric() -> None:
    sc = scenario("42")
    assert run_kind("numeric", "6 times 7 is 42.", sc=sc).score == 1.0
    assert run_kind("numeric", "42 or maybe 41", sc=sc).score == 0.0
    assert run_kind("numeric", "41.9", {"tolerance": 0.2}, sc=sc).score == 1.0
    assert run_kind("numeric", "41.9", {"rel_tolerance": 0.01}, sc=sc).score == 1.0
    assert run_kind("numeric", "41.9", sc=sc).score == 0.0
    assert run_kind("numeric", "0.75", sc=scenario("3/4")).score == 1.0
    assert run_kind("numeric", "none", sc=sc).score == 0.0


# --------------------------------------------------------------------------- choice

CHOICES = ["Paris", "London", "Berlin", "Madrid"]


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("b", "B"),
        ("Answer: B", "B"),
        ("The answer is B.", "B"),
        ("B) London", "B"),
        ("Considering (A) and the rest... the answer is (C)", "C"),
        ("Berlin", "C"),
        ("The answer is a city in France", None),
        ("A or B", None),
    ],
)
def test_extract_letter(output: str, letter: str | None) -> None:
    assert extract_letter(output, "ABCD", CHOICES) == letter


def test_choice_reference_as_letter_or_text() -> None:
    by_letter = scenario("B", choices=CHOICES)
    by_text = scenario("London", choices=CHOICES)
    for sc in (by_letter, by_text):
        assert run_kind("choice", "The answer is B.", sc=sc).score == 1.0
        assert run_kind("choice", "Answer: C", sc=sc).score == 0.0


def test_choice_bad_reference_scores_zero_with_error() -> None:
    outcome = run_kind("choice", "B", sc=scenario("Rome", choices=CHOICES))
    assert outcome.score == 0.0
    assert "neither a letter" in (outcome.rationale or "")


# --------------------------------------------------------------------------- json


def test_json_kind() -> None:
    params = {
        "schema": {"type": "object", "required": ["name", "tags"]},
        "fields": {"name": "glow", "tags[0]": "a", "meta.n": 2},
    }
    good = '{"name": "glow", "tags": ["a"], "meta": {"n": 2}}'
    assert run_kind("json", good, params).score == 1.0
    fenced = f"Here you go:\n```json\n{good}\n```"
    assert run_kind("json", fenced, params).score == 1.0
    partial = run_kind("json", '{"name": "glow", "tags": ["b"]}', params)
    assert partial.score == pytest.approx(3 / 5)  # parses, schema, name; not tags[0], meta.n
    assert "meta.n: missing" in (partial.rationale or "")
    assert run_kind("json", '{"name": "glow"}', params).score == pytest.approx(2 / 5)
    assert run_kind("json", "not json {", params).score == 0.0
    assert run_kind("json", '{"ok": true}', {"fields": {"ok": 1}}).score == 0.5


def test_json_invalid_schema_fails_at_load() -> None:
    with pytest.raises(SpecError, match=r"standards\[0\]\.params\.schema: invalid JSON schema"):
        rubrics.parse_rubric(
            {
                "name": "j",
                "standards": [{"name": "j", "kind": "json", "params": {"schema": {"type": 5}}}],
            }
        )


# --------------------------------------------------------------------------- llm_judge


class RecordingJudge:
    """Test-local fake of the judge transport (the caller's call_judge): it records the messages
    it is sent and returns a canned reply, so the kind's prompt building and reply parsing run
    for real without any model."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[list[dict[str, Any]]] = []
        self.standards: list[str | None] = []

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.calls.append(messages)
        self.standards.append(rubrics.current_standard())
        return self.reply


JUDGE = {"criteria": "Names the capital of France correctly.", "scale_max": 10}


def test_llm_judge_prompt_markers_and_json_reply() -> None:
    judge = RecordingJudge('Sure. {"score": 7, "rationale": "mostly right"} done')
    sc = scenario("Paris", input="What is the capital of France?")
    outcome = run_kind("llm_judge", "It is Paris.", JUDGE, sc=sc, call_judge=judge)
    assert outcome.score == pytest.approx(0.7)
    assert outcome.rationale == "mostly right"
    assert judge.standards == ["s"]

    (messages,) = judge.calls
    assert [m["role"] for m in messages] == ["system", "user"]
    lines = messages[1]["content"].splitlines()
    positions = [lines.index(marker) for marker in MARKERS]
    assert positions == sorted(positions)
    after = {marker: lines[i + 1] for marker, i in zip(MARKERS, positions, strict=True)}
    assert after == {
        "[CRITERIA]": JUDGE["criteria"],
        "[QUESTION]": "What is the capital of France?",
        "[REFERENCE]": "Paris",
        "[ANSWER]": "It is Paris.",
    }
    assert lines[-1] == "It is Paris."  # nothing follows the answer
    assert '"score"' in messages[0]["content"]


def test_llm_judge_question_from_messages_and_no_reference() -> None:
    sc = Scenario(
        id="v",
        input=[
            Message(role="system", content="be brief"),
            Message(
                role="user",
                content=[
                    ContentPart(type="text", text="What animal is this?"),
                    ContentPart(type="image", image="data:image/png;base64,AAAA"),
                ],
            ),
        ],
    )
    params = rubrics.kinds.LlmJudgeParams(criteria="c")
    user = judge_messages(GradingContext(sc, "a cat"), params)[1]["content"]
    assert "[QUESTION]\nWhat animal is this?\n[image attached]\n[REFERENCE]\n(none)\n" in user
    assert "be brief" not in user


def test_llm_judge_garbage_reply_is_asked_again_then_a_grading_error() -> None:
    judge = RecordingJudge("I refuse to grade this.")
    with pytest.raises(rubrics.GradingUnavailable) as caught:
        run_kind("llm_judge", "Paris", JUDGE, call_judge=judge)
    # The default 2 retries: three identical requests, then an error naming the standard.
    assert len(judge.calls) == 3 and judge.calls[0] == judge.calls[2]
    assert caught.value.error_type == "judge_error" and caught.value.standard == "s"
    assert "no score after 3 attempt(s)" in caught.value.message
    assert "I refuse to grade this." in caught.value.message


def test_llm_judge_garbage_then_a_score_is_graded() -> None:
    replies = iter(["hmm", '{"score": 9, "rationale": "good"}'])
    calls: list[Any] = []

    def judge(messages: list[dict[str, Any]]) -> str:
        calls.append(messages)
        return next(replies)

    outcome = run_kind("llm_judge", "Paris", JUDGE, call_judge=judge)
    assert (outcome.score, outcome.rationale, len(calls)) == (pytest.approx(0.9), "good", 2)


def test_llm_judge_without_judge_is_a_grading_error_not_zero() -> None:
    with pytest.raises(rubrics.GradingUnavailable, match="needs a judge"):
        run_kind("llm_judge", "Paris", JUDGE)


def test_grading_error_stops_the_grade_other_failures_score_zero() -> None:
    rubric = rubrics.parse_rubric(
        {
            "name": "r",
            "standards": [
                {"name": "exact", "kind": "exact"},
                {"name": "judge", "kind": "llm_judge", "params": JUDGE},
            ],
        }
    )

    def unreachable(messages: list[dict[str, Any]]) -> str:
        raise rubrics.GradingUnavailable("connection refused", error_type="judge_error")

    with pytest.raises(rubrics.GradingUnavailable) as caught:
        grade(rubric, GradingContext(scenario(), "Paris", call_judge=unreachable))
    assert caught.value.standard == "judge"
    # No output: nothing to send to a judge, a legitimate 0 (no call, no error).
    result = grade(rubric, GradingContext(scenario(), None, call_judge=unreachable))
    assert result.score == 0.0


def test_supplied_scores_go_through_the_rubrics_own_mean_and_filters() -> None:
    rubric = rubrics.parse_rubric(
        {
            "name": "mixed",
            "pass_threshold": 0.7,
            "standards": [
                {"name": "exact", "kind": "exact", "weight": 1, "params": {"categories": ["a"]}},
                {"name": "has", "kind": "contains", "weight": 3, "threshold": 1.0},
                {"name": "num", "kind": "numeric", "weight": 2, "params": {"categories": ["b"]}},
            ],
        }
    )
    in_a = scenario("Paris", metadata={"category": "a"})
    # `has` is supplied (0.2, weight 3); `exact` is graded by its kind (1.0, weight 1).
    result = grade(rubric, GradingContext(in_a, "paris"), {"has": 0.2})
    assert result.scores == {"exact": 1.0, "has": 0.2}
    assert result.score == pytest.approx((1 * 1.0 + 3 * 0.2) / 4) and result.passed is False
    assert result.standards[1].rationale == rubrics.SUPPLIED
    # A standard filtered out of this category cannot be supplied; neither can an unknown one.
    with pytest.raises(rubrics.NotApplicable, match="scores.num: .* does not apply"):
        grade(rubric, GradingContext(in_a, "paris"), {"num": 1.0})
    with pytest.raises(rubrics.NotApplicable, match="scores.nope: not a standard"):
        grade(rubric, GradingContext(in_a, "paris"), {"nope": 1.0})


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('```json\n{"score": "8", "rationale": "ok"}\n```', (0.8, "ok")),
        ('{"score": 15}', (1.0, None)),
        ('{"score": -2, "rationale": "bad"}', (0.0, "bad")),
        ("Score: 6", (0.6, "Score: 6")),
        ("score = 3/5 because", (0.6, "score = 3/5 because")),
        ("no number", None),
    ],
)
def test_parse_judge_reply(reply: str, expected: tuple[float, str | None] | None) -> None:
    parsed = parse_judge_reply(reply, 10)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert parsed[0] == pytest.approx(expected[0])
        assert parsed[1] == expected[1]


# --------------------------------------------------------------------------- python


@pytest.fixture
def grader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_graders.py").write_text(
        textwrap.dedent(
            """\
            def length_ok(output, scenario, limit=10):
                return output is not None and len(output) <= limit

            def half(output, scenario):
                return 0.5, f"half for {scenario.id}"

            def too_big(output, scenario):
                return 3

            NOT_CALLABLE = 1
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_graders"


def test_python_kind(grader_module: str) -> None:
    assert run_kind("python", "short", {"function": f"{grader_module}:length_ok"}).score == 1.0
    params = {"function": f"{grader_module}:length_ok", "args": {"limit": 3}}
    assert run_kind("python", "short", params).score == 0.0
    assert run_kind("python", None, {"function": f"{grader_module}:length_ok"}).score == 0.0
    half = run_kind("python", "x", {"function": f"{grader_module}:half"})
    assert (half.score, half.rationale) == (0.5, "half for s1")
    bad = run_kind("python", "x", {"function": f"{grader_module}:too_big"})
    assert bad.score == 0.0 and "outside 0..1" in (bad.rationale or "")


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_colon", "not an import path"),
        ("surely_missing_module_xyz:f", "cannot import module 'surely_missing_module_xyz'"),
        ("my_graders:nope", "has no attribute 'nope'"),
        ("my_graders:NOT_CALLABLE", "is not callable"),
    ],
)
def test_python_bad_import_path_fails_at_load(
    grader_module: str, function: str, message: str
) -> None:
    data = {"name": "p", "standards": [{"name": "p", "kind": "python", "params": {}}]}
    data["standards"][0]["params"]["function"] = function
    with pytest.raises(SpecError) as err:
        rubrics.parse_rubric(data, source="p.yaml")
    assert str(err.value).startswith("p.yaml: standards[0].params.function: ")
    assert message in str(err.value)


# --------------------------------------------------------------------------- loading


def test_all_shipped_rubrics_load() -> None:
    names = list_rubrics()
    assert {"exact_answer", "multiple_choice", "judged_free_text", "quickstart"} <= set(names)
    for name in names:
        rubric = load_rubric(name)
        assert rubric.name == name, f"{name}.yaml declares name {rubric.name!r}"
        assert rubric.description and rubric.version
        for standard in rubric.standards:
            assert standard.description, f"{name}: {standard.name} has no description"


def test_load_by_name_version_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_rubric("exact_answer@1").label == "exact_answer@1"
    with pytest.raises(SpecError, match="is version '1', not '9'"):
        load_rubric("exact_answer@9")

    write(tmp_path, "mine.yaml", rubric_yaml("- {name: e, kind: exact}\n"))
    assert load_rubric("mine.yaml", base_dir=tmp_path).version == "2"
    assert load_rubric(str(tmp_path / "mine.yaml")).name == "custom"
    assert load_rubric("mine.yaml@2", base_dir=tmp_path).name == "custom"
    monkeypatch.chdir(tmp_path)
    assert load_rubric("./mine.yaml").name == "custom"
    assert load_rubric(str(RUBRICS_DIR / "quickstart.yaml")).name == "quickstart"


def test_unknown_rubric_lists_available() -> None:
    with pytest.raises(SpecError) as err:
        load_rubric("no_such_rubric")
    assert "unknown rubric 'no_such_rubric'" in str(err.value)
    assert "exact_answer" in str(err.value) and "quickstart" in str(err.value)
    with pytest.raises(SpecError, match="rubric file not found"):
        load_rubric("nowhere/none.yaml")


def test_unknown_kind_lists_known_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", rubric_yaml("- {name: e, kind: exactly}\n"))
    with pytest.raises(SpecError) as err:
        load_rubric(str(path))
    message = str(err.value)
    assert "k.yaml: standards[0].kind: unknown standard kind 'exactly'" in message
    assert (
        "known kinds: choice, contains, exact, json, llm_judge, numeric, python, regex" in message
    )


def test_param_typos_and_bad_yaml_are_spec_errors(tmp_path: Path) -> None:
    typo = write(
        tmp_path, "t.yaml", rubric_yaml("- {name: e, kind: exact, params: {case_sensitiv: 1}}\n")
    )
    with pytest.raises(SpecError, match=r"standards\[0\]\.params\.case_sensitiv: Extra inputs"):
        load_rubric(str(typo))
    missing = write(tmp_path, "m.yaml", "name: m\nstandards: []\n")
    with pytest.raises(SpecError, match="m.yaml: standards: List should have at least 1 item"):
        load_rubric(str(missing))
    broken = write(tmp_path, "b.yaml", "name: [unclosed\n")
    with pytest.raises(SpecError, match="b.yaml: invalid YAML: line"):
        load_rubric(str(broken))
    cats = write(
        tmp_path, "c.yaml", rubric_yaml("- {name: e, kind: exact, params: {categories: exact}}\n")
    )
    with pytest.raises(SpecError, match=r"standards\[0\]\.params\.categories: must be a non-empty"):
        load_rubric(str(cats))


# --------------------------------------------------------------------------- grading


def test_categories_filter_and_weighted_overall() -> None:
    rubric = rubrics.parse_rubric(
        {
            "name": "mixed",
            "pass_threshold": 0.7,
            "standards": [
                {"name": "exact", "kind": "exact", "weight": 1, "params": {"categories": ["a"]}},
                {"name": "has", "kind": "contains", "weight": 3, "threshold": 1.0},
                {"name": "num", "kind": "numeric", "weight": 2, "params": {"categories": ["b"]}},
            ],
        }
    )
    in_a = scenario("Paris", metadata={"category": "a"})
    result = grade(rubric, GradingContext(in_a, "paris"))
    assert [s.name for s in result.standards] == ["exact", "has"]
    assert result.score == 1.0 and result.passed is True

    result = grade(rubric, GradingContext(in_a, "it is Paris"))  # exact 0 (w1), has 1 (w3)
    assert result.scores == {"exact": 0.0, "has": 1.0}
    assert result.score == pytest.approx(0.75) and result.passed is True
    assert [s.passed for s in result.standards] == [False, True]

    in_b = scenario("12", metadata={"category": "b"})
    result = grade(rubric, GradingContext(in_b, "about 11"))  # has 0 (w3), num 0 (w2)
    assert [s.name for s in result.standards] == ["has", "num"]
    assert result.score == 0.0 and result.passed is False
    result = grade(rubric, GradingContext(in_b, "no 12"))  # has 1 (w3), num 1 (w2)
    assert result.score == 1.0

    only_filtered = rubrics.parse_rubric(
        {
            "name": "f",
            "standards": [{"name": "e", "kind": "exact", "params": {"categories": ["a"]}}],
        }
    )
    empty = grade(only_filtered, GradingContext(scenario(metadata={"category": "z"}), "x"))
    assert (empty.standards, empty.score, empty.passed) == ([], None, None)


def test_a_failing_standard_scores_zero_without_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy of the registry, so the test's kind does not leak into other tests.
    monkeypatch.setattr(_registry, "_KINDS", dict(_registry._KINDS))

    @standard_kind("test_explodes", rubrics.KindParams)
    def explodes(ctx: GradingContext, params: rubrics.KindParams) -> StandardOutcome:
        """Always raises: stands in for a buggy grader."""
        raise RuntimeError("boom")

    rubric = rubrics.parse_rubric(
        {
            "name": "r",
            "standards": [
                {"name": "bad", "kind": "test_explodes"},
                {"name": "good", "kind": "exact"},
            ],
        }
    )
    result = grade(rubric, GradingContext(scenario(), "Paris"))
    bad, good = result.standards
    assert (bad.score, bad.passed, bad.error) == (0.0, False, "RuntimeError: boom")
    assert "boom" in (bad.rationale or "")
    assert good.score == 1.0 and good.error is None
    assert result.score == 0.5


def test_registry_rejects_loose_params_and_unknown_names() -> None:
    from pydantic import BaseModel

    class Loose(BaseModel):
        x: int = 0

    with pytest.raises(TypeError, match="must forbid extra fields"):
        standard_kind("loose", Loose)
    with pytest.raises(KeyError) as err:
        rubrics.get_kind("nope")
    assert "known kinds:" in str(err.value) and "exact" in str(err.value)


def test_quickstart_grades_every_category() -> None:
    rubric = load_rubric("quickstart")
    judge = RecordingJudge(json.dumps({"score": 9, "rationale": "good"}))
    cases = {
        "exact": (scenario("Paris"), "Paris.", ["exact_answer"]),
        "vision": (scenario("cat"), "Cat", ["exact_answer"]),
        "multiple_choice": (scenario("B", choices=CHOICES), "Answer: B", ["choice"]),
        "free_text": (scenario("Paris"), "Paris, on the Seine.", ["judge", "mentions_reference"]),
        "tool_use": (scenario("56"), "The calculator says 56", ["calculator_result"]),
    }
    for category, (sc, output, expected) in cases.items():
        sc = sc.model_copy(update={"metadata": {"category": category}})
        result: Grade = grade(rubric, GradingContext(sc, output, call_judge=judge))
        assert [s.name for s in result.standards] == expected, category
        assert result.passed is True, (category, result)
    free = grade(
        rubric,
        GradingContext(
            scenario("Paris", metadata={"category": "free_text"}), "Paris", call_judge=judge
        ),
    )
    assert free.score == pytest.approx((3 * 0.9 + 1 * 1.0) / 4)
    assert judge.standards[-1] == "judge"


def test_standard_scores_rows() -> None:
    rubric = load_rubric("exact_answer")
    result = grade(rubric, GradingContext(scenario(), "Paris"))
    (row,) = result.standard_scores(invocation_id="i", run_id="r", grading_id="g")
    assert (row.rubric, row.rubric_version, row.standard, row.kind) == (
        "exact_answer",
        "1",
        "exact",
        "exact",
    )
    assert row.score == 1.0 and row.passed is True
