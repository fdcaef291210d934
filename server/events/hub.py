"""In-process change notifications for the watch fan-out, wake-ups for idle workers, and
API-key changes for the key cache.

A notification carries no payload: the fan-out reads the outbox (once per
process) when told that a generation changed; the outbox table holds the
events themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class ChangeListener(Protocol):
    """What the hub tells about changes (server.events.fanout.Fanout is one)."""

    def changed(self, project_id: str, generation_id: str, revision: int | None) -> None:
        """A change of this generation was committed (``revision``: the revision it made,
        when the notification says; None: unknown)."""
        ...

    def changed_everywhere(self) -> None:
        """Changes may have been missed (say, after a lost NOTIFY connection)."""
        ...

    @property
    def watcher_count(self) -> int:
        """Watchers attached to this listener."""
        ...


class Subscription:
    """A level-triggered wake-up flag for one waiter (a live request's bounded wait, a run's
    lease watcher).

    Watch streams do not use these: they ride the fan-out (server.events.fanout).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Mark that something changed."""
        self._event.set()

    async def wait(self, at_most: float | None) -> None:
        """Wait until woken (or ``at_most`` seconds pass; None: no bound), then re-arm."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)
        self._event.clear()


class EventHub:
    """Routes "generation changed" notifications to the fan-out, and "work due" to workers."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        # Told the id of an API key that changed, or None when changes may have been missed.
        self._key_listeners: list[Callable[[str | None], None]] = []
        self.work_available = asyncio.Event()
        # Set on every generation change: the webhook dispatcher looks at its outbox.
        self.deliveries_available = asyncio.Event()

    def add_key_listener(self, forget: Callable[[str | None], None]) -> None:
        """Call ``forget(key_id)`` when a key changes, ``forget(None)`` after a gap."""
        self._key_listeners.append(forget)

    def notify_key(self, key_id: str) -> None:
        """An API key changed (revoked) in a committed transaction."""
        for forget in self._key_listeners:
            forget(key_id)

    def add_listener(self, listener: ChangeListener) -> None:
        """Tell ``listener`` about every change from now on."""
        self._listeners.append(listener)

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

    def notify(
        self,
        project_id: str,
        generation_id: str,
        *,
        deliveries: bool = True,
        revision: int | None = None,
    ) -> None:
        """A generation of this project changed (after its transaction committed).

        ``deliveries``: whether the change may have queued a webhook delivery (False
        when the generation has no webhook: the senders are not woken to look for one).
        ``revision``: the revision the change made, when known (a NOTIFY says it).
        """
        for listener in self._listeners:
            listener.changed(project_id, generation_id, revision)
        for key in (generation_key(generation_id), project_key(project_id)):
            for subscription in self._subscribers.get(key, ()):
                subscription.wake()
        if deliveries:
            self.deliveries_available.set()

    def notify_everyone(self) -> None:
        """Wake every watcher and worker (after a gap in cross-replica notifications)."""
        for listener in self._listeners:
            listener.changed_everywhere()
        for forget in self._key_listeners:
            forget(None)
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.wake()
        self.work_available.set()
        self.deliveries_available.set()

    def notify_work(self) -> None:
        """Wake idle workers: a generation became due."""
        self.work_available.set()

    @property
    def subscriber_count(self) -> int:
        """How many watchers and waiters are open in this process (for metrics and tests)."""
        return sum(listener.watcher_count for listener in self._listeners) + sum(
            len(s) for s in self._subscribers.values()
        )


def generation_key(generation_id: str) -> str:
    """The subscription key of one generation."""
    return f"g:{generation_id}"


def project_key(project_id: str) -> str:
    """The subscription key of all generations of a project."""
    return f"p:{project_id}"
