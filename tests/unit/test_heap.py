"""server.heap: survivors of a full collection frozen, and given back on a period."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from server.heap import refresh_forever, settle, unsettle


class Node:
    """A tracked object that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def _collector_holds(node: Node) -> bool:
    return any(o is node for generation in range(3) for o in gc.get_objects(generation))


@pytest.fixture
def settled() -> Iterator[None]:
    settle()
    try:
        yield
    finally:
        unsettle()


def test_what_survives_a_full_collection_is_frozen_and_newer_objects_are_not(
    settled: None,
) -> None:
    # Only the collections asked for here: an automatic one in between (the scans below
    # allocate) would freeze ``young`` before its count is read.
    gc.disable()
    try:
        old = Node()
        gc.collect()
        assert not _collector_holds(old)  # frozen: later full collections do not walk it
        young = Node()
        assert _collector_holds(young)
        gc.collect()
        # Tracked, alive, and in none of the three generations: in the frozen one. (Not
        # the freeze count, which falls when a collected cycle frees frozen objects.)
        assert gc.is_tracked(young) and not _collector_holds(young)
    finally:
        gc.enable()


def test_a_frozen_object_is_still_freed_when_its_last_reference_goes(settled: None) -> None:
    node = Node()
    gc.collect()
    gone = weakref.ref(node)
    del node
    assert gone() is None


async def test_a_frozen_cycle_is_freed_after_a_refresh(settled: None) -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    gc.collect()  # both survive, so both are frozen
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is not None  # a cycle among frozen objects outlives its use...
    refresher = asyncio.create_task(refresh_forever(period=0.01))
    await asyncio.sleep(0.05)  # the loop runs the refresher's earlier timer first
    refresher.cancel()
    gc.collect()
    assert gone() is None  # ...until the next refresh gives it back to the collector


def test_unsettle_stops_freezing() -> None:
    settle()
    unsettle()
    assert gc.get_freeze_count() == 0
    node = Node()
    gc.collect()
    assert _collector_holds(node)
