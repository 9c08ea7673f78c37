"""Errors a user can act on. Each message names the file, field or id and says what to do."""

from __future__ import annotations


class GlowError(Exception):
    """Base of Glow's own errors; the CLI prints the message (no traceback) and exits 2."""

    exit_code = 2


class SpecError(GlowError):
    """A test, scenario or rubric file is invalid. Raised before any model call or store write."""


class NotFound(GlowError):
    """An id (test, invocation, run, draft) that the store does not hold."""


class TransitionError(GlowError):
    """A status change the invocation lifecycle does not allow; the message names the status."""


class BudgetExhausted(GlowError):
    """The test's budget_usd is spent: no new model call may start."""
