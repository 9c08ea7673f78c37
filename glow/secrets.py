"""Secrets in the environment: which variables hold keys, and masking their values out of text.

A benchmark process runs with the operator's provider keys in its environment (OPENAI_API_KEY,
AWS_SECRET_ACCESS_KEY...), and any error text a provider or a library produces can echo one.
Every error Glow records (trace events, invocation and run rows, artifacts) and every log line a
Glow process writes goes through `redact`, so those values never land anywhere, whatever path
they took into the text.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

# Shorter values are not keys, and masking them would garble ordinary text ("true", "1").
MIN_SECRET_LENGTH = 8

# Variables that hold credentials: every provider variable litellm reads for a key ends in one of
# these (OPENAI_API_KEY, ANTHROPIC_AUTH_TOKEN, AWS_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID,
# DATAROBOT_API_TOKEN, AZURE_AD_TOKEN...), as do most operators' own (GITHUB_TOKEN, DB_PASSWORD).
_SECRET_NAME = re.compile(
    r"(API_?KEY|ACCESS_KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY|AUTH_KEY)",
    re.IGNORECASE,
)
# ...except these, which name files or settings rather than hold a secret.
_NOT_SECRET = re.compile(r"(_FILE|_PATH|_DIR|_URL|_URI|_ARN|_NAME|_MAX_TOKENS)$", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # names repeat; the scan runs on every masked text
def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET.search(name)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """The values of the credential variables set now, longest first (so none is half masked).

    Read on every call, not cached: a test or a long-lived API process may set keys later.
    """
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if len(value) >= MIN_SECRET_LENGTH and is_secret_name(name)
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` with every credential variable's value, and each of `extra` (keys in use), masked.

    `extra` values are masked from 4 characters on: they are known keys, whatever their length.
    """
    if not text:
        return text
    for secret in sorted((s for s in extra if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for secret in secret_values():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_deep(value: Any) -> Any:
    """`value` (strings, lists and dicts of them) with every credential variable's value masked."""
    secrets = secret_values()
    if not secrets:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            for secret in secrets:
                if secret in item:
                    item = item.replace(secret, MASK)
            return item
        if isinstance(item, list):
            return [walk(x) for x in item]
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        return item

    return walk(value)


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask credential values in a log record's message and traceback."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
        return record
    masked = redact(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    return record


_installed = False


def install_log_redaction() -> None:
    """Mask credential values in every log record this process creates (idempotent).

    Done in the record factory, not with a filter: a filter on a logger only sees records
    logged to that very logger, and one on a handler only the handlers that exist when it is
    added, while Prefect sets its own up lazily (the API handler that feeds the Prefect UI too).
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True
