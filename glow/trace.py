"""Building model inputs from scenarios, tool schemas from functions, and trace markdown.

The markdown is what a person reads in the Prefect UI (artifact `trace-<invocation-id>`); the
store keeps the same trace as structured events.
"""

from __future__ import annotations

import base64
import inspect
import json
import mimetypes
from pathlib import Path
from typing import Any, get_type_hints

from glow.models import AgentSpec, Invocation, Run, Scenario, TraceEvent

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _data_uri(ref: str, base_dir: Path) -> str:
    if ref.startswith("data:"):
        return ref
    path = Path(ref) if Path(ref).exists() else base_dir / ref
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def scenario_messages(
    scenario: Scenario, agent: AgentSpec, base_dir: Path = Path(".")
) -> list[dict[str, Any]]:
    """OpenAI-style chat messages for a scenario: files become data URIs the provider can read."""
    messages: list[dict[str, Any]] = []
    if agent.system_prompt:
        messages.append({"role": "system", "content": agent.system_prompt})
    if isinstance(scenario.input, str):
        messages.append({"role": "user", "content": scenario.input})
        return messages
    for message in scenario.input:
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
            elif part.type == "image":
                url = _data_uri(part.image or "", base_dir)
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif part.type == "audio":
                uri = _data_uri(part.audio or "", base_dir)
                fmt = uri.split(";", 1)[0].rsplit("/", 1)[-1]
                data = uri.split(",", 1)[1]
                parts.append({"type": "input_audio", "input_audio": {"data": data, "format": fmt}})
            else:
                url = _data_uri(part.video or "", base_dir)
                parts.append({"type": "video_url", "video_url": {"url": url}})
        messages.append({"role": message.role, "content": parts})
    return messages


def tool_schema(fn: Any) -> dict[str, Any]:
    """An OpenAI tool definition from a Python function's signature and docstring."""
    hints = get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(fn).parameters.items():
        properties[name] = {"type": _JSON_TYPES.get(hints.get(name, str), "string")}
        if param.default is inspect.Parameter.empty:
            required.append(name)
    doc = inspect.getdoc(fn) or fn.__name__
    return {
        "type": "function",
        "function": {
            "name": fn.__name__,
            "description": doc.splitlines()[0],
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _redact_media(value: Any) -> Any:
    """Data URIs make a trace unreadable in the UI; show their size instead."""
    if isinstance(value, str) and value.startswith("data:") and len(value) > 200:
        return f"{value[:40]}... ({len(value)} chars)"
    if isinstance(value, dict):
        return {k: _redact_media(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_media(v) for v in value]
    return value


def _event_markdown(index: int, event: TraceEvent) -> str:
    head = f"### {index}. {event.kind}"
    if event.name:
        head += f" `{event.name}`"
    if event.attempt:
        head += f" (attempt {event.attempt})"
    facts = []
    if event.latency_s is not None:
        facts.append(f"latency {event.latency_s:.3f}s")
    if event.usage:
        facts.append(
            f"tokens {event.usage.get('input_tokens', 0)} in / "
            f"{event.usage.get('output_tokens', 0)} out"
        )
    if event.kind in ("model_call", "grading") and event.usage is not None:
        facts.append("cost unknown" if event.cost_usd is None else f"cost ${event.cost_usd:.6f}")
    body = [head, ", ".join(facts)] if facts else [head]
    if event.error_type:
        body.append(f"**{event.error_type}**: {event.error_message}")
    for label, value in (
        ("request", event.request),
        ("response", event.response),
        ("content", event.content),
    ):
        if value is not None:
            text = json.dumps(_redact_media(value), indent=2, default=str, ensure_ascii=False)
            body.append(f"<details><summary>{label}</summary>\n\n```json\n{text}\n```\n</details>")
    return "\n\n".join(body)


def trace_markdown(invocation: Invocation, run: Run) -> str:
    """The trace of one run as markdown: summary table first, then every event."""
    cost = "unknown" if invocation.cost_usd is None else f"${invocation.cost_usd:.6f}"
    scores = ", ".join(f"{k} {v:.2f}" for k, v in invocation.scores.items()) or "-"
    lines = [
        f"# Trace of invocation `{invocation.invocation_id}` (run {run.number})",
        "",
        "| field | value |",
        "|---|---|",
        f"| test | `{invocation.test_id}` |",
        f"| scenario | `{invocation.scenario_id}` ({invocation.category}) |",
        f"| model / agent | {invocation.model} / {invocation.agent} |",
        f"| status | **{invocation.status.value}** |",
        f"| score | {'-' if invocation.score is None else f'{invocation.score:.3f}'} "
        f"({'passed' if invocation.passed else 'not passed'}) |",
        f"| per standard | {scores} |",
        f"| tokens | {invocation.input_tokens} in / {invocation.output_tokens} out |",
        f"| cost | {cost} |",
    ]
    if invocation.error_type:
        lines.append(f"| error | {invocation.error_type}: {invocation.error_message} |")
    lines += ["", "## Output", "", "```", (run.output or "").replace("```", "'''"), "```", ""]
    lines += ["## Events", ""]
    lines += [_event_markdown(i, e) for i, e in enumerate(run.trace, start=1)]
    return "\n".join(lines)
