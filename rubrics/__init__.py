"""Rubrics: versioned YAML files of graded standards, and the standard kinds that grade them.

A rubric file lives directly in this folder (`rubrics/<name>.yaml`) or anywhere by path:

    name: exact_answer
    version: "1"
    description: The answer is exactly the reference.
    pass_threshold: 0.5          # overall weighted score at or above which a run passes
    standards:
      - name: exact
        kind: exact              # a registered standard kind (see `list_kinds()`)
        weight: 1                # share of the overall score
        threshold: 1.0           # the standard passes at or above this score
        description: Matches a reference after normalising case and spacing.
        params: {ignore_punctuation: true}   # validated by the kind's params model at load

Mixing categories: any standard may carry the reserved params key `categories: [...]`. It then
grades only scenarios whose `metadata.category` is in that list; for other scenarios it is left
out of the grade and of the weighted mean. This lets one rubric grade a mixed scenario set
(exact answers, multiple choice, free text...). The key is removed before the remaining params
are validated against the kind's params model.

Kinds are registered with `@standard_kind(name, ParamsModel, needs_judge=..., blocking=...)`,
plain or `async def`; the built-in ones (`exact`, `contains`, `regex`, `numeric`, `choice`,
`json`, `llm_judge`, `python`) live in `rubrics.kinds` and are registered when this package is
imported. Grading gets a `GradingContext`; a judge model is reached only through its injected
`call_judge` transport (`await ctx.ask_judge(...)`). A standard that cannot be computed (judge
unreachable, no score in its reply, budget spent) raises `GradingUnavailable` out of `grade()`:
an unknown score, never a 0.

One grading function, two doors: `grade()` from plain code, `agrade()` from async code. Its
results: `StandardOutcome` (a standard's score; stored as `glow.models.StandardScore`) and
`Grade` (an invocation's grade).
"""

from rubrics import kinds as _builtin_kinds  # noqa: F401  (registers the built-in kinds)
from rubrics._context import GradingContext, JudgeFn, current_standard, question_text
from rubrics._grade import (
    SUPPLIED,
    Grade,
    NotApplicable,
    agrade,
    grade,
    graded_categories,
    judged_standards,
    require_judge,
)
from rubrics._loader import (
    RUBRICS_DIR,
    list_rubrics,
    load_rubric,
    load_rubric_file,
    parse_rubric,
    validate_rubric,
)
from rubrics._outcome import StandardOutcome
from rubrics._params import CATEGORIES_KEY, applies_to
from rubrics._registry import KindParams, StandardKind, UnknownKind, get_kind, standard_kind
from rubrics._registry import kinds as list_kinds  # `rubrics.kinds` is the subpackage
from rubrics._unavailable import GradingUnavailable

__all__ = [
    "CATEGORIES_KEY",
    "RUBRICS_DIR",
    "SUPPLIED",
    "Grade",
    "GradingContext",
    "GradingUnavailable",
    "JudgeFn",
    "KindParams",
    "NotApplicable",
    "StandardKind",
    "StandardOutcome",
    "UnknownKind",
    "agrade",
    "applies_to",
    "current_standard",
    "get_kind",
    "grade",
    "graded_categories",
    "judged_standards",
    "list_kinds",
    "list_rubrics",
    "load_rubric",
    "load_rubric_file",
    "parse_rubric",
    "question_text",
    "require_judge",
    "standard_kind",
    "validate_rubric",
]
