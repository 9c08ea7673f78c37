"""The test specification: what a user writes by hand (the test YAML, scenarios, rubrics).

Every model here forbids unknown fields (`SpecModel`), so a typo fails loudly instead of being
ignored; model params are checked so that credentials never land in a spec (they go in the
environment).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Caps on what one test may ask for, so a typo (`epochs: 1e20`) is a clear error naming the field
# rather than an overflow, or a cross product built in memory until the machine gives out.
MAX_EPOCHS = 1000


MAX_CELLS = 1_000_000


MAX_IN_FLIGHT = 10_000


class SpecModel(BaseModel):
    """Base for everything a user writes by hand: unknown fields are errors, not silence."""

    model_config = ConfigDict(extra="forbid")


class Modality(StrEnum):
    text = "text"
    image = "image"
    audio = "audio"
    video = "video"


class Prices(SpecModel):
    """USD per token; overrides litellm's bundled price map for one model."""

    input_cost_per_token: float = Field(ge=0)
    output_cost_per_token: float = Field(ge=0)


class ModelSpec(SpecModel):
    """One model under test (or a judge): what litellm is called with, never the key itself."""

    name: str = Field(description="Display name, unique within a test; used in results.")
    model: str = Field(description="litellm model string, e.g. openai/gpt-4o-mini.")
    params: dict[str, Any] = Field(default_factory=dict, description="Call params (temperature).")
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="NAME of the env var holding the key.")
    api_key_secret: str | None = Field(None, description="NAME of a Prefect Secret block.")
    prices: Prices | None = None
    modalities: list[Modality] = Field(default_factory=lambda: [Modality.text])
    max_in_flight: int | None = Field(None, ge=1, le=MAX_IN_FLIGHT)

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return check_params(params)


PARAM_ERROR = "glow_param"


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` as they are, or a validation error naming the first one a test may not set."""
    problem = param_problem(params)
    if problem is not None:
        path, message = problem
        # `path` extends the error's location below `params` (see glow.spec's formatting).
        raise PydanticCustomError(PARAM_ERROR, "{message}", {"path": path, "message": message})
    return params


# Arguments Glow passes to every call itself: a param of the same name would collide with them
# (litellm raises "got multiple values", and every call of the test fails, retried for nothing)
# or silently bypass the test's own setting.
_GLOW_ARGS = {
    "timeout": "Glow sets each call's timeout; use the test's timeout_s (and deadline_s)",
    "request_timeout": "Glow sets each call's timeout; use the test's timeout_s",
    "api_base": "use the model's api_base field",
    "base_url": "use the model's api_base field",
    "max_retries": "Glow does the retrying; use the test's max_retries",
    "num_retries": "Glow does the retrying; use the test's max_retries",
    "messages": "messages come from the scenario and the agent",
    "model": "use the model's model field",
    "tools": "tools come from the agent's tools",
    "functions": "tools come from the agent's tools",
    "stream": "Glow reads whole answers; streaming is not supported",
    "stream_options": "Glow reads whole answers; streaming is not supported",
    "custom_llm_provider": "the provider comes from the model string (provider/model)",
    "model_list": "list each model under models",
    "fallbacks": "a fallback would call another model, with the environment's keys; list it "
    "under models",
    "context_window_fallback_dict": "a fallback would call another model; list it under models",
    "input_cost_per_token": "use the model's prices",
    "output_cost_per_token": "use the model's prices",
    "mock_response": "Glow calls the model; use the bundled simulator for offline runs",
}


# Names that carry a credential, whatever the provider: api_key, aws_secret_access_key,
# aws_session_token, azure_ad_token, vertex_credentials, client_secret, password...
_CREDENTIAL = re.compile(
    r"(secret|password|passwd|credential|api_?key|access_?key|private_?key|(^|_)key$|^key|"
    r"(^|_)token($|_)|auth|cookie|bearer)"
)


# ...except these OpenAI parameters, which only look like one.
_NOT_CREDENTIAL = frozenset({"prompt_cache_key"})


def is_credential_name(name: str) -> bool:
    """Whether a param or header name says it carries a credential."""
    normal = name.lower().replace("-", "_")
    return normal not in _NOT_CREDENTIAL and bool(_CREDENTIAL.search(normal))


def param_problem(params: dict[str, Any]) -> tuple[list[str], str] | None:
    """The first param a test may not set, as (path below params, why), or None.

    Credentials never go in a test file (params are recorded in every trace, stored and
    published): the key's variable or Secret block is named in api_key_env / api_key_secret.
    Header mappings and extra_body / extra_query are searched one level down too; other nested
    values (a response_format's JSON schema...) are data, whatever their field names.
    """
    for name, value in params.items():
        lowered = str(name).lower()
        if lowered in _GLOW_ARGS:
            return [name], f"{name!r} is set by Glow: {_GLOW_ARGS[lowered]}"
        if is_credential_name(str(name)):
            return [name], _credential_message(name)
        if lowered in _NESTED_CHECKED and isinstance(value, dict):
            for inner in value:
                if is_credential_name(str(inner)):
                    return [name, inner], _credential_message(f"{name}.{inner}")
    return None


_NESTED_CHECKED = frozenset(
    {"extra_headers", "headers", "default_headers", "extra_body", "extra_query"}
)


def _credential_message(name: str) -> str:
    return (
        f"{name!r} is a credential; keys never go in a test file (params are recorded in every "
        "trace): name the env var in api_key_env or the Prefect Secret block in api_key_secret"
    )


class AgentSpec(SpecModel):
    """How a model is driven: a system prompt, optional tools, and a turn limit."""

    name: str = "direct"
    system_prompt: str | None = None
    tools: list[str] = Field(default_factory=list, description="Import paths module:function.")
    max_turns: int = Field(1, ge=1, le=50)


class ContentPart(SpecModel):
    """One part of a chat message. `image`/`audio`/`video` take a data URI or a file under data/."""

    type: Literal["text", "image", "audio", "video"]
    text: str | None = None
    image: str | None = None
    audio: str | None = None
    video: str | None = None

    @model_validator(mode="after")
    def _payload_present(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f"a {self.type!r} part needs a {self.type!r} field")
        return self


class Message(SpecModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class Scenario(SpecModel):
    """One benchmark item: the input, the reference answer(s) and free metadata (category...)."""

    id: str = Field(min_length=1)
    input: str | list[Message]
    reference: str | list[str] | None = None
    choices: list[str] | None = Field(None, description="Options for multiple choice, in order.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def category(self) -> str:
        return str(self.metadata.get("category", "uncategorised"))

    @property
    def references(self) -> list[str]:
        if self.reference is None:
            return []
        return [self.reference] if isinstance(self.reference, str) else list(self.reference)

    @property
    def modalities(self) -> list[Modality]:
        found = {Modality.text}
        if isinstance(self.input, list):
            for message in self.input:
                if isinstance(message.content, list):
                    found.update(Modality(part.type) for part in message.content)
        return sorted(found)


class StandardSpec(SpecModel):
    """One graded standard of a rubric: a registered kind with its params."""

    name: str
    kind: str
    weight: float = Field(1.0, ge=0)
    threshold: float = Field(0.5, ge=0, le=1, description="Score at or above which it passes.")
    params: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None


class Rubric(SpecModel):
    """A versioned set of standards; an invocation passes when its weighted score >= threshold."""

    name: str
    version: str = "1"
    description: str | None = None
    pass_threshold: float = Field(0.5, ge=0, le=1)
    standards: list[StandardSpec] = Field(min_length=1)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @model_validator(mode="after")
    def _unique_standards(self) -> Rubric:
        names = [s.name for s in self.standards]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate standard names: {', '.join(dupes)}")
        if sum(s.weight for s in self.standards) <= 0:
            raise ValueError("standards' weights sum to 0")
        return self


class TestSpec(SpecModel):
    """A test: scenarios x models x agents x epochs, graded by one rubric."""

    __test__ = False  # not a pytest class

    name: str
    description: str | None = None
    scenarios: str | list[Scenario] = Field(description="A .jsonl/.yaml file, or inline.")
    models: list[ModelSpec] = Field(min_length=1)
    agents: list[AgentSpec] = Field(default_factory=lambda: [AgentSpec()])
    rubric: str = Field(description="A rubric name under rubrics/ or a path to a rubric YAML.")
    judge: ModelSpec | None = Field(None, description="Model used by llm_judge standards.")
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    concurrency: int = Field(8, ge=1, le=1024)
    timeout_s: float = Field(60.0, gt=0, description="Per model call.")
    max_retries: int = Field(2, ge=0, le=20)
    deadline_s: float | None = Field(
        None,
        gt=0,
        description="Total time for one invocation's model calls (all agent turns), retries "
        "and waits included; its judge calls get a deadline of their own.",
    )
    budget_usd: float | None = Field(None, gt=0)
    provider_limits: dict[str, Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT)]] = Field(
        default_factory=dict,
        description="Provider (e.g. openai) -> most calls in flight across every test sharing "
        "the Prefect server, held through a strict Prefect global concurrency limit.",
    )
    tags: list[str] = Field(default_factory=list)
    cluster_by: str | None = Field(
        None,
        min_length=1,
        description="A scenario metadata key (e.g. source) whose scenarios share a source: "
        "standard errors and paired comparisons are clustered by its value.",
    )
    shards: int = Field(
        1,
        ge=1,
        le=256,
        description="Run the cells as this many `run-shard` flow runs on the work pool's "
        "workers (needs a PostgreSQL store every worker shares).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> TestSpec:
        for what, names in (
            ("models", [m.name for m in self.models]),
            ("agents", [a.name for a in self.agents]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        return self
