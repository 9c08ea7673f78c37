"""`glow.eventloop.run`: the loop and garbage-collector settings Glow runs a test under."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop

from glow import eventloop


def test_run_uses_uvloop_and_tunes_the_gc_only_while_it_runs() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())

    async def inside() -> tuple[type, tuple[int, int, int], int]:
        return type(asyncio.get_running_loop()), gc.get_threshold(), gc.get_freeze_count()

    loop_type, thresholds, frozen = eventloop.run(inside())
    assert loop_type is uvloop.Loop
    assert thresholds[0] == eventloop.YOUNG_THRESHOLD
    assert frozen > before[1]  # the objects alive at the start are out of the collector's way
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_gc_settings_are_restored_when_the_run_fails() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())

    async def fails() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        eventloop.run(fails())
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
