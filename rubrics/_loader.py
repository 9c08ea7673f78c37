"""Finding, parsing and validating rubric YAML files.

Every problem becomes one `SpecError` naming the file and the field path
(`rubrics/foo.yaml: standards[1].params.pattern: invalid regex '(': ...`), raised before any
model is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from glow.errors import SpecError
from glow.models import Rubric
from rubrics._params import CATEGORIES_KEY, CategoriesError, categories_of, kind_params
from rubrics._registry import UnknownKind

RUBRICS_DIR = Path(__file__).resolve().parent
_SUFFIXES = (".yaml", ".yml")


def list_rubrics() -> list[str]:
    """Names of the rubrics shipped in `RUBRICS_DIR` (file stems), sorted."""
    return sorted({p.stem for suffix in _SUFFIXES for p in RUBRICS_DIR.glob(f"*{suffix}")})


def load_rubric(ref: str, base_dir: Path | None = None) -> Rubric:
    """Load and fully validate a rubric.

    `ref` is a rubric name (`exact_answer` -> `RUBRICS_DIR/exact_answer.yaml`), optionally pinned
    as `name@version`, or a path to a YAML file, relative to `base_dir` (then the working
    directory). A pinned version must equal the file's `version`.
    """
    ref = ref.strip()
    if not ref:
        raise SpecError("rubric: empty rubric reference; give a rubric name or a YAML path")
    wanted: str | None = None
    base, sep, version = ref.rpartition("@")
    if sep and base and "/" not in version and "\\" not in version:
        ref, wanted = base, version
    path = _find(ref, base_dir)
    rubric = load_rubric_file(path)
    if wanted is not None and rubric.version != wanted:
        raise SpecError(
            f"{_display(path)}: version: rubric {rubric.name!r} is version {rubric.version!r}, "
            f"not {wanted!r} as {ref}@{wanted} asks"
        )
    return rubric


def load_rubric_file(path: Path) -> Rubric:
    """Parse and validate one rubric YAML file."""
    where = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{where}: cannot read rubric file: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{where}: invalid YAML: {_yaml_problem(err)}") from None
    if data is None:
        raise SpecError(f"{where}: empty rubric file")
    if not isinstance(data, dict):
        raise SpecError(
            f"{where}: a rubric is a mapping (name, version, pass_threshold, standards), "
            f"not a {type(data).__name__}"
        )
    return parse_rubric(data, source=where)


def parse_rubric(data: dict[str, Any], source: str = "rubric") -> Rubric:
    """Validate a rubric given as a mapping; `source` names it in error messages."""
    data = dict(data)
    # YAML reads `version: 1` as an int; a version is a label, so accept it as one.
    if isinstance(data.get("version"), int | float) and not isinstance(data["version"], bool):
        data["version"] = str(data["version"])
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(source, err)) from None
    validate_rubric(rubric, source)
    return rubric


def validate_rubric(rubric: Rubric, source: str = "rubric") -> None:
    """Check every standard's kind and params (including `categories`); SpecError if wrong."""
    problems: list[str] = []
    for index, spec in enumerate(rubric.standards):
        at = f"standards[{index}]"
        try:
            categories_of(spec)
        except CategoriesError as err:
            problems.append(f"{at}.params.{CATEGORIES_KEY}: {err}")
        try:
            kind_params(spec)
        except UnknownKind as err:
            problems.append(f"{at}.kind: {err}")
        except ValidationError as err:
            problems.extend(
                f"{at}.params{_loc(e['loc'], leading_dot=True)}: {_msg(e)}" for e in err.errors()
            )
    if problems:
        raise SpecError("\n".join(f"{source}: {p}" for p in problems))


def _find(ref: str, base_dir: Path | None) -> Path:
    if ref.endswith(_SUFFIXES) or "/" in ref or "\\" in ref:
        given = Path(ref).expanduser()
        if given.is_absolute():
            candidates = [given]
        else:
            bases = [base_dir, Path.cwd()] if base_dir is not None else [Path.cwd()]
            candidates = list(dict.fromkeys(b / given for b in bases))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        tried = ", ".join(str(c) for c in candidates)
        raise SpecError(f"rubric file not found: {ref} (looked at {tried})")
    for suffix in _SUFFIXES:
        candidate = RUBRICS_DIR / f"{ref}{suffix}"
        if candidate.is_file():
            return candidate
    available = ", ".join(list_rubrics()) or "(none)"
    raise SpecError(
        f"unknown rubric {ref!r}; available rubrics: {available} "
        "(or give a path to a rubric YAML file)"
    )


def _display(path: Path) -> str:
    resolved = path.resolve()
    if resolved.parent == RUBRICS_DIR:
        return f"{RUBRICS_DIR.name}/{resolved.name}"
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _loc(loc: tuple[Any, ...], leading_dot: bool = False) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out if leading_dot else out.lstrip(".")


def _msg(error: Any) -> str:
    # pydantic prefixes our validators' messages with "Value error, "; the user needs only ours.
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for error in err.errors():
        loc = _loc(error["loc"])
        lines.append(f"{source}: {loc}: {_msg(error)}" if loc else f"{source}: {_msg(error)}")
    return "\n".join(lines)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(err).replace("\n", " ")
