"""A test's context: what every cell of a test shares, and the process-wide registry of them.

A `TestContext` holds the resolved test (spec, scenarios, rubric), the store, the test's budget
and the cells to grade again from their recorded output. It is built once per process and test:
the run-test flow registers the one it built (`register_context`); the API, regrade and the
export find it with `context_for`, which rebuilds it when the stored test changed revision
(another process may have added a model or a scenario).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glow.artifacts import ArtifactPublisher
from glow.budget import Budget, spent_usd
from glow.limits import model_slot, provider_slot
from glow.llm import CallOptions
from glow.models import ModelSpec, TestRecord
from glow.planning import grading_failed
from glow.spec import LoadedTest, import_object, resolve_test
from glow.store import Store


@dataclass
class TestContext:
    """What every cell of a test shares: the resolved test and the store. Built once per process."""

    __test__ = False

    test_id: str
    loaded: LoadedTest
    store: Store
    publisher: ArtifactPublisher | None = None
    tools: dict[str, Any] = field(default_factory=dict)
    # The stored test's revision `loaded` was built from (None: read it when registered); the
    # per-process cache holds a context only while the store still has that revision.
    revision: int | None = None

    def __post_init__(self) -> None:
        self.scenarios = self.loaded.scenarios_by_id
        self.models = {m.name: m for m in self.loaded.spec.models}
        self.agents = {a.name: a for a in self.loaded.spec.agents}
        self.budget: Budget | None = None
        if self.loaded.spec.budget_usd is not None:
            # Every generation paid for counts, not just each invocation's latest run.
            self.budget = Budget(self.loaded.spec.budget_usd, spent_usd(self.store, self.test_id))
        # Cells to grade again from their recorded output rather than run (glow.execution).
        self.grade_only: set[str] = grading_failed(self.store, self.test_id)

    def options(self, model: ModelSpec) -> CallOptions:
        """The call options of one invocation's calls to `model`: the test's timeouts and
        retries, its budget, and the provider's and the model's concurrency slots."""
        spec = self.loaded.spec
        return CallOptions(
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            # One deadline for the whole invocation: every turn of its agent loop shares it.
            deadline_at=None if spec.deadline_s is None else time.monotonic() + spec.deadline_s,
            budget=self.budget,
            provider_slot=provider_slot(
                model.provider if model.provider in spec.provider_limits else None
            ),
            slot=model_slot(self.test_id, model.name, model.max_in_flight),
        )

    def tool(self, ref: str) -> Any:
        """The agent tool `ref` ("module:function"), imported once per context."""
        if ref not in self.tools:
            self.tools[ref] = import_object(ref)
        return self.tools[ref]


_contexts: dict[str, TestContext] = {}
_contexts_lock = threading.Lock()


def register_context(ctx: TestContext) -> None:
    """Make `ctx` the context `context_for` returns for its test in this process (stamped with
    the stored test's revision when it has none)."""
    if ctx.revision is None:
        ctx.revision = ctx.store.test_revision(ctx.test_id)
    with _contexts_lock:
        _contexts[ctx.test_id] = ctx


def context_for(
    test_id: str,
    store: Store | None = None,
    record: TestRecord | None = None,
    *,
    fresh: bool = True,
) -> TestContext:
    """The test's context: the one registered (by the flow, or an earlier call) while the
    stored test is still at its revision, else rebuilt from the store's record (another
    process may have added a model or a scenario). `record`: the test as the caller just read
    it. `fresh=False` takes a registered context as it is (a flow's own cells, whose flow
    registered it), without reading the store.
    """
    with _contexts_lock:
        cached = _contexts.get(test_id)
    if cached is not None and not fresh:
        return cached
    store = store or (cached.store if cached else Store.from_settings())
    revision = record.revision if record is not None else store.test_revision(test_id)
    if cached is not None and cached.revision == revision:
        return cached
    record = record if record is not None else store.get_test(test_id)
    ctx = TestContext(test_id, resolve_record(record), store, revision=record.revision)
    register_context(ctx)
    return ctx


def resolve_record(record: TestRecord) -> LoadedTest:
    """The test as stored, resolved again (scenarios, tools) with the rubric it was created
    with, against the bundled simulator running now."""
    from glow.bundled_simulator import rebind

    path = Path(record.spec_path) if record.spec_path else None
    # The stored spec holds the simulator address of the day it was loaded: use today's.
    loaded = resolve_test(rebind(record.spec, path), path=path)
    loaded.rubric = record.rubric  # the rubric version the test was created with
    return loaded


def fresh_context(test_id: str, store: Store, rebuild: bool = False) -> TestContext:
    """The test's context without a publisher left behind by an earlier flow on another loop.

    A `run-test` flow registers a context whose artifact publisher belongs to its event loop;
    cells the API starts (`run-invocation-flow`) must publish (and flush) on their own.
    `rebuild` resolves the test again from its record (a test on the bundled simulator must use
    the simulator running now).
    """
    if rebuild:
        ctx = TestContext(test_id, resolve_record(store.get_test(test_id)), store)
        register_context(ctx)
        return ctx
    ctx = context_for(test_id, store)
    if ctx.publisher is not None:
        ctx = TestContext(test_id, ctx.loaded, ctx.store, revision=ctx.revision)
        register_context(ctx)
    return ctx
