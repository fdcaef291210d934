"""A watcher's bounded queue: events in order, a future to wait on, overflow as an error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.events.fanout import Watcher, WatcherOverflowError, WatchEvent


def _event(revision: int) -> WatchEvent:
    # The queue never looks inside the generation: any object stands in for it.
    generation: Any = None
    return WatchEvent("updated", generation, revision, revision)


async def test_events_come_out_in_order_and_an_idle_watcher_waits_on_a_future() -> None:
    watcher = Watcher(limit=4)
    assert watcher.take() is None
    arrival = watcher.arrival()
    assert watcher.arrival() is arrival  # one future however often it is asked for
    assert not arrival.done()
    first = _event(1)
    watcher.push(first)
    await asyncio.wait_for(arrival, 5)
    assert watcher.take() is first
    assert not watcher.arrival().done()  # a fresh future for the next wait


async def test_taking_returns_each_event_once_in_push_order() -> None:
    watcher = Watcher(limit=4)
    events = [_event(revision) for revision in (1, 2, 3)]
    for event in events:
        watcher.push(event)
    assert watcher.pending() == 3
    assert [watcher.take() for _ in events] == events
    assert watcher.take() is None
    assert watcher.pending() == 0


async def test_past_its_bound_a_watcher_overflows_and_says_so_once_drained() -> None:
    watcher = Watcher(limit=2)
    arrival = watcher.arrival()
    for revision in (1, 2, 3):
        watcher.push(_event(revision))
    assert watcher.overflowed
    assert arrival.done()  # the waiting stream wakes up to learn it fell behind
    with pytest.raises(WatcherOverflowError):
        watcher.take()
    watcher.push(_event(4))  # ignored: it must resume from the database
    with pytest.raises(WatcherOverflowError):
        watcher.take()


async def test_a_filter_keeps_unwanted_events_out() -> None:
    watcher = Watcher(limit=4, accepts=lambda event: event.revision % 2 == 0)
    for revision in (1, 2, 3, 4):
        watcher.push(_event(revision))
    assert [e.revision for e in (watcher.take(), watcher.take()) if e] == [2, 4]
    assert watcher.take() is None
