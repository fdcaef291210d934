"""In-process wake-ups for watchers and workers; the outbox table holds the events themselves.

A notification carries no payload: each woken watcher re-reads the outbox from
the last revision (or cursor) it sent. So a slow watcher costs one flag, not a
growing queue, and a watcher can never miss or reorder a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Subscription:
    """A level-triggered wake-up flag for one watcher."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Mark that something changed."""
        self._event.set()

    async def wait(self, at_most: float) -> None:
        """Wait until woken (or ``at_most`` seconds pass), then re-arm."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)
        self._event.clear()


class EventHub:
    """Routes "generation changed" notifications to the subscriptions that care."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        self.work_available = asyncio.Event()

    @contextmanager
    def subscribe(self, key: str) -> Iterator[Subscription]:
        """Subscribe to ``generation_key(...)`` or ``project_key(...)`` for a ``with`` block."""
        subscription = Subscription()
        self._subscribers[key].add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[key]

    def notify(self, project_id: str, generation_id: str) -> None:
        """Wake the watchers of this generation and of its project."""
        for key in (generation_key(generation_id), project_key(project_id)):
            for subscription in self._subscribers.get(key, ()):
                subscription.wake()

    def notify_everyone(self) -> None:
        """Wake every watcher and worker (after a gap in cross-replica notifications)."""
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.wake()
        self.work_available.set()

    def notify_work(self) -> None:
        """Wake idle workers: a generation became due."""
        self.work_available.set()

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open (for metrics and tests)."""
        return sum(len(s) for s in self._subscribers.values())


def generation_key(generation_id: str) -> str:
    """The subscription key of one generation."""
    return f"g:{generation_id}"


def project_key(project_id: str) -> str:
    """The subscription key of all generations of a project."""
    return f"p:{project_id}"
