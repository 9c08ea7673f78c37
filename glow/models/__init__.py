"""The one schema of Glow.

Every shape the product reads or writes is declared once, as a pydantic model: the test YAML
is validated by `TestSpec` (`glow.models.spec`), the store's rows are `Invocation`, `Run`,
`Generation`, `StandardScore` (`glow.models.ledger`), the API returns them as they are, and the
parquet schema is derived from them and from `AggregatedRow` (`glow.models.rows`; see
`glow.results`). Models that come from user files forbid unknown fields, so a typo fails loudly
instead of being ignored. Every public name is re-exported here: `from glow.models import X`.
"""

from glow.models.common import (
    config_hash,
    known_sum,
    slugify,
    utcnow,
)
from glow.models.ledger import (
    FINAL_STATUSES,
    GRADING_ERRORS,
    INVOCATION_NAMESPACE,
    JUDGE_BUDGET_EXHAUSTED,
    JUDGE_ERROR,
    Cell,
    Draft,
    Generation,
    Invocation,
    Redacted,
    Run,
    SkippedCell,
    StandardScore,
    Status,
    TestRecord,
    TraceEvent,
    invocation_id_for,
)
from glow.models.rows import (
    AggregatedRow,
)
from glow.models.spec import (
    MAX_CELLS,
    MAX_EPOCHS,
    MAX_IN_FLIGHT,
    PARAM_ERROR,
    AgentSpec,
    ContentPart,
    Message,
    Modality,
    ModelSpec,
    Prices,
    Rubric,
    Scenario,
    SpecModel,
    StandardSpec,
    TestSpec,
    check_params,
    is_credential_name,
    param_problem,
)

__all__ = [
    "AgentSpec",
    "AggregatedRow",
    "Cell",
    "ContentPart",
    "Draft",
    "FINAL_STATUSES",
    "GRADING_ERRORS",
    "Generation",
    "INVOCATION_NAMESPACE",
    "Invocation",
    "JUDGE_BUDGET_EXHAUSTED",
    "JUDGE_ERROR",
    "MAX_CELLS",
    "MAX_EPOCHS",
    "MAX_IN_FLIGHT",
    "Message",
    "Modality",
    "ModelSpec",
    "PARAM_ERROR",
    "Prices",
    "Redacted",
    "Rubric",
    "Run",
    "Scenario",
    "SkippedCell",
    "SpecModel",
    "StandardScore",
    "StandardSpec",
    "Status",
    "TestRecord",
    "TestSpec",
    "TraceEvent",
    "check_params",
    "config_hash",
    "invocation_id_for",
    "is_credential_name",
    "known_sum",
    "param_problem",
    "slugify",
    "utcnow",
]
