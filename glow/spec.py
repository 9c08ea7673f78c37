"""Loading a test: YAML -> TestSpec, its scenarios and its rubric, all checked before any call.

Every problem becomes one `SpecError` whose message names the file, the line when known, and the
field path (`models[1].name`), so a user can fix it without reading a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from glow.errors import SpecError
from glow.models import (
    MAX_CELLS,
    PARAM_ERROR,
    Modality,
    ModelSpec,
    Rubric,
    Scenario,
    SkippedCell,
    TestSpec,
)
from glow.secrets import is_secret_name

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class LoadedTest:
    """A validated test with everything it refers to resolved."""

    spec: TestSpec
    scenarios: list[Scenario]
    rubric: Rubric
    path: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    @cached_property  # looked up once per cell: rebuilding it each time made planning quadratic
    def scenarios_by_id(self) -> dict[str, Scenario]:
        return {s.id: s for s in self.scenarios}

    def skipped_cells(self) -> list[SkippedCell]:
        """Cells whose scenario needs a modality the model does not declare."""
        skipped = []
        for scenario in self.scenarios:
            needs = set(scenario.modalities)
            for model in self.spec.models:
                missing = sorted(needs - set(model.modalities))
                if missing:
                    skipped.extend(
                        SkippedCell(
                            scenario_id=scenario.id, model=model.name, agent=a.name, missing=missing
                        )
                        for a in self.spec.agents
                    )
        return skipped


def _where(path: Path | str | None) -> str:
    return str(path) if path is not None else "<inline test>"


def format_validation_error(
    err: ValidationError, source: str, node: yaml.Node | None = None, line: int | None = None
) -> str:
    """One readable line per problem: `file:line: field.path: message`."""
    lines = []
    for problem in err.errors():
        loc = problem["loc"]
        if problem["type"] == PARAM_ERROR:  # a problem inside `params`: point at its key
            loc = (*loc, *problem["ctx"]["path"])
        dotted = _dotted(loc) if loc else ""
        at = line if line is not None else _line_of(node, loc)
        where = f"{source}:{at}" if at else source
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the README's test reference)"
        lines.append(f"{where}: {dotted or '(top level)'}: {message}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line."""
    found = None
    for part in loc:
        if node is None:
            break
        found = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        found = node.start_mark.line + 1
    return found


def interpolate_env(text: str, source: str) -> str:
    """Replace `${VAR}` / `${VAR:-default}` from the environment (for api_base and the like)."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if is_secret_name(name):
            # Its value would be stored with the test and sent where the field goes.
            raise SpecError(
                f"{source}: ${{{name}}} would put a credential into the test; name the variable "
                "in api_key_env instead (Glow reads it at call time and never stores it)"
            )
        value = os.environ.get(name, default)
        if value is None:
            raise SpecError(f"{source}: ${{{name}}} is used but that environment variable is unset")
        return value

    return _ENV_REF.sub(sub, text)


# Test content, sent to the model as written: `${...}` there is text, never an environment
# variable (an environment secret must not reach a provider, nor a prompt's `${name}` fail a load).
_LITERAL_FIELDS = (("scenarios", int), ("agents", int, "system_prompt"))


def interpolate_settings(data: Any, source: str, loc: tuple[Any, ...] = ()) -> Any:
    """A parsed test file with `${VAR}` expanded in its settings' string values.

    Settings are everything but the test content: inline scenarios and agents' system prompts
    stay literal, and scenario files are never expanded. Runs after parsing, so a value can
    neither change the YAML's structure nor its line numbers.
    """
    if any(_matches(loc, pattern) for pattern in _LITERAL_FIELDS):
        return data
    if isinstance(data, dict):
        return {k: interpolate_settings(v, source, (*loc, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_settings(v, source, (*loc, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:
        return interpolate_env(data, f"{source}: {_dotted(loc)}")
    return data


def _matches(loc: tuple[Any, ...], pattern: tuple[Any, ...]) -> bool:
    if len(loc) != len(pattern):
        return False
    return all(
        p is int and isinstance(part, int) or p == part
        for part, p in zip(loc, pattern, strict=True)
    )


def _dotted(loc: tuple[Any, ...]) -> str:
    dotted = ""
    for part in loc:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    return dotted or "(top level)"


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; syntax errors name the file and line. Nothing is expanded."""
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{where}: invalid YAML: {problem}") from None


def validate(model: type[BaseModel], data: Any, source: str, node: yaml.Node | None = None) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source, node)) from None


def resolve_path(ref: str, base_dir: Path) -> Path:
    """Files are looked up relative to the working directory, then to the test file's folder."""
    candidate = Path(ref)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    beside = base_dir / ref
    return beside if beside.exists() else candidate


def load_scenarios(ref: str, base_dir: Path) -> list[Scenario]:
    path = resolve_path(ref, base_dir)
    if not path.is_file():
        raise SpecError(
            f"scenarios: file {ref!r} not found (looked in {Path.cwd()} and {base_dir})"
        )
    scenarios: list[Scenario] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SpecError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
            try:
                scenarios.append(Scenario.model_validate(data))
            except ValidationError as exc:
                raise SpecError(format_validation_error(exc, str(path), line=number)) from None
    elif path.suffix in {".yaml", ".yml"}:
        data, node = read_yaml(path)
        if not isinstance(data, list):
            raise SpecError(f"{path}: expected a list of scenarios")
        for i, item in enumerate(data):
            item_node = node.value[i] if isinstance(node, yaml.SequenceNode) else None
            scenarios.append(validate(Scenario, item, str(path), item_node))
    else:
        raise SpecError(f"{path}: scenarios must be a .jsonl or .yaml file")
    if not scenarios:
        raise SpecError(f"{path}: no scenarios in the file")
    return scenarios


def _check_scenarios(scenarios: list[Scenario], source: str, base_dir: Path) -> None:
    seen: set[str] = set()
    for scenario in scenarios:
        if scenario.id in seen:
            raise SpecError(f"{source}: duplicate scenario id {scenario.id!r}")
        seen.add(scenario.id)
        if isinstance(scenario.input, list):
            for message in scenario.input:
                if isinstance(message.content, str):
                    continue
                for part in message.content:
                    if part.type == Modality.text:
                        continue
                    ref = getattr(part, part.type)
                    if ref.startswith("data:"):
                        continue
                    if not resolve_path(ref, base_dir).is_file():
                        raise SpecError(
                            f"{source}: scenario {scenario.id!r}: {part.type} file {ref!r} "
                            "not found"
                        )


def _check_cells(spec: TestSpec, scenarios: int, source: str) -> None:
    """Refuse a cross product too large to plan, before any of it is built in memory."""
    count = scenarios * len(spec.models) * len(spec.agents) * spec.epochs
    if count > MAX_CELLS:
        raise SpecError(
            f"{source}: epochs: {scenarios} scenarios x {len(spec.models)} models x "
            f"{len(spec.agents)} agents x {spec.epochs} epochs = {count:,} cells, over the "
            f"cap of {MAX_CELLS:,} cells a test may have; split it into several tests"
        )


def _check_tools(spec: TestSpec, source: str) -> None:
    for i, agent in enumerate(spec.agents):
        for j, ref in enumerate(agent.tools):
            try:
                import_object(ref)
            except (ImportError, AttributeError, ValueError) as exc:
                raise SpecError(
                    f"{source}: agents[{i}].tools[{j}]: cannot import {ref!r}: {exc}"
                ) from None


def import_object(ref: str) -> Any:
    """`package.module:name` (or `package.module.name`) -> the object."""
    module_name, _, attr = ref.partition(":") if ":" in ref else ref.rpartition(".")
    if not module_name or not attr:
        raise ValueError("expected 'module:function'")
    return getattr(importlib.import_module(module_name), attr)


def load_test(path: str | Path) -> LoadedTest:
    """Read and check a test YAML file and everything it names."""
    path = Path(path)
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a test file is a mapping of fields (name, scenarios, models...)")
    data = interpolate_settings(data, str(path))
    spec = validate(TestSpec, data, str(path), node)
    return resolve_test(spec, path=path)


def resolve_test(spec: TestSpec, path: Path | None = None) -> LoadedTest:
    """Resolve an already-validated spec (from YAML, the API or a flow parameter)."""
    from rubrics import load_rubric, require_judge

    source = _where(path)
    base_dir = path.parent if path is not None else Path.cwd()
    if isinstance(spec.scenarios, str):
        scenarios = load_scenarios(spec.scenarios, base_dir)
    else:
        scenarios = list(spec.scenarios)
    if not scenarios:
        raise SpecError(f"{source}: scenarios: the test has no scenarios")
    _check_scenarios(scenarios, source, base_dir)
    _check_cells(spec, len(scenarios), source)
    if spec.cluster_by and not any(spec.cluster_by in s.metadata for s in scenarios):
        raise SpecError(
            f"{source}: cluster_by: no scenario has the metadata key {spec.cluster_by!r}; "
            "name a key of the scenarios' metadata or remove cluster_by"
        )
    _check_tools(spec, source)
    try:
        rubric = load_rubric(spec.rubric, base_dir=base_dir)
    except SpecError as exc:
        raise SpecError(f"{source}: rubric: {exc}") from None
    require_judge(rubric, spec.judge, f"{source}: judge")
    return LoadedTest(spec=spec, scenarios=scenarios, rubric=rubric, path=path, base_dir=base_dir)


def preflight(loaded: LoadedTest) -> None:
    """Checks that need the environment and litellm, still before any model call.

    Every key env var a model names must be set, and a model that names no key and no
    api_base needs its provider's variables (litellm knows which); litellm must know each
    model's provider and not drop any of its params; a judge must be a model litellm knows, or
    a custom endpoint (api_base) - a judge that does not exist would otherwise zero every judged
    score at run time.
    """
    from glow.llm import litellm

    lib = litellm()
    where = _where(loaded.path)
    named = [(f"models[{i}]", m) for i, m in enumerate(loaded.spec.models)]
    if loaded.spec.judge:
        named.append(("judge", loaded.spec.judge))
    for field_path, model in named:
        if model.api_key_env and not os.environ.get(model.api_key_env):
            raise SpecError(
                f"{where}: {field_path}: model {model.name!r}: environment variable "
                f"{model.api_key_env} (api_key_env) is not set"
            )
        try:
            _, provider, _, _ = lib.get_llm_provider(model.model)
        except Exception:  # noqa: BLE001 - litellm raises its BadRequestError for unknown ones
            raise SpecError(
                f"{where}: {field_path}.model: litellm does not know the provider of "
                f"{model.model!r}; write it as provider/model, e.g. openai/gpt-4o-mini"
            ) from None
        if (
            loaded.spec.budget_usd is not None
            and model.prices is None
            and not _known_model(lib, model.model)
        ):
            raise SpecError(
                f"{where}: {field_path}: model {model.name!r} has no known price, so budget_usd "
                "cannot be enforced; add `prices` (input/output_cost_per_token) to the model"
            )
        if field_path == "judge" and model.api_base is None and not _known_model(lib, model.model):
            raise SpecError(
                f"{where}: judge.model: {model.model!r} is not a model litellm knows; use a "
                "known judge model, or give api_base for a custom endpoint"
            )
        _check_provider_key(lib, model, f"{where}: {field_path}")
        _check_dropped_params(lib, model, provider, f"{where}: {field_path}")


def _known_model(lib: Any, model: str) -> bool:
    from glow.llm import price_known

    return price_known(lib, model)


def _check_provider_key(lib: Any, model: ModelSpec, where: str) -> None:
    """A model that names no key and no api_base calls its provider with the provider's own
    variables: refuse it now when they are unset, rather than fail every cell at run time."""
    if model.api_key_env or model.api_key_secret or model.api_base:
        return  # a named key is checked above; a custom api_base gets no key (a local server)
    found = lib.validate_environment(model=model.model)
    missing = list(found.get("missing_keys") or [])
    if not missing:
        return  # set, or litellm does not know what this provider needs: the call will tell
    raise SpecError(
        f"{where}: model {model.name!r} ({model.model}) has no key: set "
        f"{' and '.join(missing)} in the environment, or name the variable that holds its key "
        "in api_key_env (or a Prefect Secret block in api_key_secret)"
    )


# Call arguments litellm handles itself (headers, client settings), never dropped as body params.
_NOT_BODY_PARAMS = frozenset(
    {"extra_headers", "default_headers", "api_version", "deployment_id", "organization"}
)


def _check_dropped_params(lib: Any, model: ModelSpec, provider: str, where: str) -> None:
    """A standard OpenAI param the provider does not support would be dropped without a word
    (Glow runs litellm with drop_params), so the test would not run with the setting it says;
    provider-specific names (top_k...) pass through to the provider as they are."""
    openai_params = set(getattr(lib, "OPENAI_CHAT_COMPLETION_PARAMS", ())) - _NOT_BODY_PARAMS
    try:
        supported = lib.get_supported_openai_params(model=model.model, custom_llm_provider=provider)
    except Exception:  # noqa: BLE001 - litellm cannot tell: nothing to check against
        return
    if not supported:
        return
    for name in model.params:
        if name in openai_params and name not in supported:
            raise SpecError(
                f"{where}.params.{name}: litellm does not send {name!r} to {provider} models "
                f"(it would be dropped); {provider} takes: {', '.join(sorted(set(supported)))}"
            )
