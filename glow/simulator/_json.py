"""JSON for the simulator's bodies: orjson when it is installed, else the standard library.

The simulator encodes one body per request and one per streamed chunk, under the load of a
whole bench; orjson (a dependency of Prefect, so normally present) keeps that cost small.
"""

from __future__ import annotations

from typing import Any

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        """`obj` as compact JSON bytes."""
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is installed in the project venv
    import json

    def dumps(obj: Any) -> bytes:
        """`obj` as compact JSON bytes."""
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads
