"""The built-in standard kinds. Importing this package registers them all."""

from rubrics.kinds._choice import ChoiceParams, choice
from rubrics.kinds._contains import ContainsParams, contains
from rubrics.kinds._exact import ExactParams, exact
from rubrics.kinds._json import JsonParams, json_kind
from rubrics.kinds._llm_judge import (
    MARKERS,
    JudgeUnavailable,
    LlmJudgeParams,
    judge_messages,
    llm_judge,
    parse_judge_reply,
)
from rubrics.kinds._numeric import NumericParams, last_number, numeric
from rubrics.kinds._python import PythonParams, python
from rubrics.kinds._regex import RegexParams, regex

__all__ = [
    "MARKERS",
    "ChoiceParams",
    "ContainsParams",
    "ExactParams",
    "JsonParams",
    "JudgeUnavailable",
    "LlmJudgeParams",
    "NumericParams",
    "PythonParams",
    "RegexParams",
    "choice",
    "contains",
    "exact",
    "json_kind",
    "judge_messages",
    "last_number",
    "llm_judge",
    "numeric",
    "parse_judge_reply",
    "python",
    "regex",
]
