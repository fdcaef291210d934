"""Per-process fan-out: each change is read once and handed to every watcher of it here.

A *channel* exists per watched generation and per watched project while it has
watchers. Notifications (the in-process hub, PostgreSQL NOTIFYs from other
replicas, one safety-net poller) only mark channels dirty; one dispatcher task
reads the new outbox rows of each dirty channel once and pushes the resulting
shared events into every watcher's bounded queue. An idle watcher is one
pending future: no timer, no query.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from server.domain.generations import Generation
from server.domain.tasks import cancel_and_wait

log = structlog.get_logger("imagegen.events")

# Project rows read per query; a longer backlog is read in several.
PROJECT_BATCH = 200
# Recent events a generation channel keeps, so most resumes need no query.
RECENT_EVENTS = 16
# After a failed read (database down), wait this long before trying again.
RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class WatchEvent:
    """One state sent to watchers: "snapshot", "created", "updated" or "deleted".

    One object is shared by every watcher that receives it; ``encoded`` lets
    the api layer build its wire message once per event, not once per watcher.
    """

    type: str
    generation: Generation
    revision: int
    seq: int
    encoded: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def cursor(self) -> str:
        """The project-stream resume token of this event."""
        return str(self.seq)

    def as_snapshot(self) -> WatchEvent:
        """The same state, sent as the "snapshot" that opens a stream."""
        return WatchEvent("snapshot", self.generation, self.revision, self.seq)


class OutboxReader(Protocol):
    """The reads the fan-out needs (services.watch implements them over the database)."""

    async def latest(self, generation_id: str) -> WatchEvent | None:
        """The generation's current state, if it ever existed."""
        ...

    async def generation_after(self, generation_id: str, revision: int) -> list[WatchEvent]:
        """The generation's events after ``revision``, in order."""
        ...

    async def project_head(self, project_id: str) -> int:
        """The project's highest sequence number."""
        ...

    async def project_after(self, project_id: str, seq: int, limit: int) -> list[WatchEvent]:
        """Up to ``limit`` of the project's events after ``seq``, in order."""
        ...

    async def heads(
        self, generation_ids: Iterable[str], project_ids: Iterable[str]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The newest revision per generation and the highest sequence number per project."""
        ...


class WatcherOverflowError(Exception):
    """The watcher fell further behind than its queue allows."""


class Watcher:
    """One stream's bounded queue of shared events; waiting costs one pending future.

    Thousands of these sit idle at once, so each holds as little as it can: no
    queue until an event is queued, and a bare future (no coroutine) to wait on.
    """

    __slots__ = ("_accepts", "_limit", "_queue", "_waiter", "overflowed")

    def __init__(self, limit: int, accepts: Callable[[WatchEvent], bool] | None = None) -> None:
        self._limit = limit
        self._accepts = accepts
        self._queue: deque[WatchEvent] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def push(self, event: WatchEvent) -> None:
        """Queue ``event`` if this watcher wants it; past the bound, mark it overflowed."""
        if self.overflowed or (self._accepts is not None and not self._accepts(event)):
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._limit:
            self.overflowed = True
            self._queue = None  # it must resume from the database anyway
        else:
            queue.append(event)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self) -> WatchEvent | None:
        """The next queued event, or None; raises WatcherOverflowError once it overflowed."""
        queue = self._queue
        if queue:
            event = queue.popleft()
            if not queue:
                self._queue = None  # an idle watcher keeps no empty deque
            return event
        if self.overflowed:
            raise WatcherOverflowError
        return None

    def arrival(self) -> asyncio.Future[None]:
        """A future done at the next push (await it, then ``take``)."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def pending(self) -> int:
        """Events queued and not yet taken."""
        return len(self._queue) if self._queue else 0


class GenerationChannel:
    """The watchers of one generation and the last state this process read of it."""

    __slots__ = (
        "_snapshot",
        "generation_id",
        "loaded",
        "project_id",
        "recent",
        "revision",
        "watchers",
    )

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        self.project_id = ""
        self.watchers: set[Watcher] = set()
        self.revision = 0
        self.recent: deque[WatchEvent] = deque(maxlen=RECENT_EVENTS)
        self._snapshot: WatchEvent | None = None
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def latest(self) -> WatchEvent | None:
        """The newest event read (the generation's current state as this process knows it)."""
        return self.recent[-1] if self.recent else None

    def snapshot(self) -> WatchEvent:
        """The current state as a "snapshot" event, one object shared by all new watchers."""
        latest = self.recent[-1]
        if self._snapshot is None or self._snapshot.revision != latest.revision:
            self._snapshot = latest.as_snapshot()
        return self._snapshot

    def history_after(self, revision: int) -> list[WatchEvent] | None:
        """The kept events after ``revision``, or None when they do not reach back that far."""
        if not self.recent or self.recent[0].revision > revision + 1:
            return None
        return [event for event in self.recent if event.revision > revision]

    def accept(self, event: WatchEvent) -> bool:
        """Record and hand out ``event`` if it is the next revision; False on a gap."""
        if event.revision <= self.revision:
            return True  # already handed out
        if self.recent and event.revision != self.revision + 1:
            return False
        self.revision = event.revision
        self.project_id = event.generation.project_id
        self.recent.append(event)
        for watcher in self.watchers:
            watcher.push(event)
        return True


class ProjectChannel:
    """The watchers of one project's stream and how far this process has read it."""

    __slots__ = ("cursor", "loaded", "project_id", "watchers")

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        self.watchers: set[Watcher] = set()
        self.cursor = 0
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Fanout:
    """Channels, the dispatcher that reads each change once, and the safety-net poller."""

    def __init__(self, reader: OutboxReader, *, queue_limit: int, poll_seconds: float) -> None:
        self._reader = reader
        self.queue_limit = queue_limit
        self._poll_seconds = poll_seconds
        self._generations: dict[str, GenerationChannel] = {}
        self._projects: dict[str, ProjectChannel] = {}
        # generation id -> project id, and project ids, with changes not yet read
        self._dirty_generations: dict[str, str] = {}
        # Of those generations, the ones marked only by notifications that said which
        # revision they made: the newest such revision (read if the channel has not).
        self._echoes: dict[str, int] = {}
        self._dirty_projects: set[str] = set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loading: set[asyncio.Task[None]] = set()
        # Which path found changes: notifications (hub, NOTIFY) or the poller (tests check it).
        self.wakeups = {"notified": 0, "polled": 0}

    def start(self) -> None:
        """Start the dispatcher (and the poller, unless its interval is 0)."""
        self._tasks.append(asyncio.create_task(self._dispatch(), name="watch-dispatcher"))
        if self._poll_seconds > 0:
            self._tasks.append(asyncio.create_task(self._poll(), name="watch-poller"))

    async def stop(self) -> None:
        """Stop both tasks."""
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        for task in self._tasks:
            task.cancel()

    @property
    def watcher_count(self) -> int:
        """How many watchers are attached (for metrics and tests)."""
        return sum(len(c.watchers) for c in self._generations.values()) + sum(
            len(c.watchers) for c in self._projects.values()
        )

    def known_revision(self, generation_id: str) -> int | None:
        """The newest revision of a watched generation this process has read (None: unwatched)."""
        channel = self._generations.get(generation_id)
        return None if channel is None else channel.revision

    # --- notifications (synchronous: they only mark and wake) ---

    def changed(self, project_id: str, generation_id: str, revision: int | None = None) -> None:
        """A change of this generation was committed: its channels need a read.

        With the ``revision`` it made (every NOTIFY says it, and so do the hub's
        notifications of most changes), the generation's channel is read only if it
        has not read that revision by then: on PostgreSQL a process hears each of its
        own changes twice, from its hub and as a NOTIFY, in either order.
        """
        marked = False
        if generation_id in self._generations:
            echo = self._echoes.get(generation_id)
            if revision is None:
                self._mark(generation_id, project_id)
            elif generation_id not in self._dirty_generations:
                self._dirty_generations[generation_id] = project_id
                self._echoes[generation_id] = revision
            elif echo is not None:
                self._echoes[generation_id] = max(echo, revision)
            marked = True
        if project_id in self._projects:
            self._dirty_projects.add(project_id)
            marked = True
        if marked:
            self.wakeups["notified"] += 1
            self._kick.set()

    def _mark(self, generation_id: str, project_id: str) -> None:
        """Mark the generation's channel for a read, whatever revision it has read."""
        self._dirty_generations[generation_id] = project_id
        self._echoes.pop(generation_id, None)

    def changed_everywhere(self) -> None:
        """Notifications may have been lost: every channel needs a read."""
        for channel in self._generations.values():
            self._mark(channel.generation_id, channel.project_id)
        self._dirty_projects.update(self._projects)
        self._kick.set()

    # --- attaching watchers ---
    # Plain attach/detach pairs (not context managers): each open stream would keep a
    # generator and its context manager alive for its whole life.

    def attach_generation(self, generation_id: str) -> tuple[GenerationChannel, Watcher]:
        """A new watcher on the generation's channel (made, and its load started, if new);
        await ``loaded`` before using it, and ``detach_generation`` it in a ``finally``."""
        watcher = Watcher(self.queue_limit)
        channel = self._generations.get(generation_id)
        if channel is None:
            channel = self._generations[generation_id] = GenerationChannel(generation_id)
            self._spawn(self._load_generation(channel))
        channel.watchers.add(watcher)
        return channel, watcher

    def detach_generation(self, channel: GenerationChannel, watcher: Watcher) -> None:
        """Take the watcher off; the channel goes with its last watcher."""
        if _left_empty(self._generations, channel.generation_id, channel, watcher):
            self._dirty_generations.pop(channel.generation_id, None)
            self._echoes.pop(channel.generation_id, None)

    def attach_project(
        self, project_id: str, accepts: Callable[[WatchEvent], bool] | None
    ) -> tuple[ProjectChannel, Watcher]:
        """A new watcher (taking only what ``accepts``) on the project's channel; await
        ``loaded`` before using it, and ``detach_project`` it in a ``finally``."""
        watcher = Watcher(self.queue_limit, accepts)
        channel = self._projects.get(project_id)
        if channel is None:
            channel = self._projects[project_id] = ProjectChannel(project_id)
            self._spawn(self._load_project(channel))
        channel.watchers.add(watcher)
        return channel, watcher

    def detach_project(self, channel: ProjectChannel, watcher: Watcher) -> None:
        """Take the watcher off; the channel goes with its last watcher."""
        if _left_empty(self._projects, channel.project_id, channel, watcher):
            self._dirty_projects.discard(channel.project_id)

    def _spawn(self, load: Coroutine[Any, Any, None]) -> None:
        # Loads run as tasks of their own: the watcher that started one may leave first.
        task = asyncio.create_task(load)
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    async def refresh(self, channel: GenerationChannel) -> None:
        """Read the generation's channel now (a watcher needs to know it exists)."""
        await self._read_generation(channel)

    async def _load_generation(self, channel: GenerationChannel) -> None:
        try:
            latest = await self._reader.latest(channel.generation_id)
        except BaseException as error:
            self._drop_failed(self._generations, channel.generation_id, channel)
            channel.loaded.set_exception(error)
            return
        if latest is not None:
            channel.accept(latest)
        channel.loaded.set_result(None)
        if channel.generation_id in self._dirty_generations:
            self._kick.set()  # a change came while loading; the dispatcher put it back

    async def _load_project(self, channel: ProjectChannel) -> None:
        try:
            channel.cursor = await self._reader.project_head(channel.project_id)
        except BaseException as error:
            self._drop_failed(self._projects, channel.project_id, channel)
            channel.loaded.set_exception(error)
            return
        channel.loaded.set_result(None)
        if channel.project_id in self._dirty_projects:
            self._kick.set()

    @staticmethod
    def _drop_failed(channels: dict[str, Any], key: str, channel: object) -> None:
        # Its watchers get the error; the next watcher starts a fresh channel.
        if channels.get(key) is channel:
            del channels[key]

    # --- reading changes ---

    async def _dispatch(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            generations, self._dirty_generations = self._dirty_generations, {}
            echoes, self._echoes = self._echoes, {}
            projects, self._dirty_projects = self._dirty_projects, set()
            try:
                await self._read(generations, echoes, projects)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database may be restarting: try again
                log.warning("watch_read_failed", error=str(error), retry_in=RETRY_SECONDS)
                for generation_id, project_id in generations.items():
                    self._mark(generation_id, project_id)
                self._dirty_projects |= projects
                await asyncio.sleep(RETRY_SECONDS)
                self._kick.set()

    async def _read(
        self, generations: dict[str, str], echoes: dict[str, int], projects: set[str]
    ) -> None:
        fed: set[str] = set()
        for project_id in projects:
            channel = self._projects.get(project_id)
            if channel is None:
                continue
            if not channel.loaded.done():
                self._dirty_projects.add(project_id)  # read once loaded (see _load_project)
                continue
            fed |= await self._read_project(channel)
        for generation_id, project_id in generations.items():
            if generation_id in fed:
                continue  # the project read above brought it up to date
            gen_channel = self._generations.get(generation_id)
            if gen_channel is None:
                continue
            if not gen_channel.loaded.done():
                self._mark(generation_id, project_id)
                continue
            if gen_channel.revision >= echoes.get(generation_id, gen_channel.revision + 1):
                continue  # only told of revisions it has read (its own changes, heard again)
            await self._read_generation(gen_channel)

    async def _read_project(self, channel: ProjectChannel) -> set[str]:
        """Read the project's new rows; returns the generation channels brought up to date."""
        fed: set[str] = set()
        gaps: set[str] = set()
        while True:
            events = await self._reader.project_after(
                channel.project_id, channel.cursor, PROJECT_BATCH
            )
            for event in events:
                channel.cursor = max(channel.cursor, event.seq)
                for watcher in channel.watchers:
                    watcher.push(event)
                generation = self._generations.get(event.generation.id)
                if generation is not None and generation.loaded.done():
                    (fed if generation.accept(event) else gaps).add(event.generation.id)
            if len(events) < PROJECT_BATCH:
                break
        return fed - gaps

    async def _read_generation(self, channel: GenerationChannel) -> None:
        for event in await self._reader.generation_after(channel.generation_id, channel.revision):
            if not channel.accept(event):
                break  # cannot happen: the rows are contiguous

    async def _poll(self) -> None:
        """The safety net: one query per interval for every channel's head; read what moved."""
        while True:
            await asyncio.sleep(self._poll_seconds)
            if not self._generations and not self._projects:
                continue
            try:
                revisions, sequences = await self._reader.heads(
                    list(self._generations), list(self._projects)
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("watch_poll_failed", error=str(error))
                continue
            moved = False
            for generation_id, revision in revisions.items():
                channel = self._generations.get(generation_id)
                if channel is not None and revision > channel.revision:
                    self._mark(generation_id, channel.project_id)
                    moved = True
            for project_id, seq in sequences.items():
                project = self._projects.get(project_id)
                if project is not None and seq > project.cursor:
                    self._dirty_projects.add(project_id)
                    moved = True
            if moved:
                self.wakeups["polled"] += 1
                self._kick.set()


def _left_empty(
    channels: dict[str, Any],
    key: str,
    channel: GenerationChannel | ProjectChannel,
    watcher: Watcher,
) -> bool:
    """Take ``watcher`` off ``channel``; drop the channel if that was its last watcher
    (and it is still the one registered); True if it was dropped."""
    channel.watchers.discard(watcher)
    if channel.watchers or channels.get(key) is not channel:
        return False
    del channels[key]
    return True


async def loaded(channel: GenerationChannel | ProjectChannel) -> None:
    """Wait for a channel's first read (shielded: one leaving watcher must not cancel it);
    raises what that read raised."""
    loaded = channel.loaded
    if not loaded.done():
        await asyncio.shield(loaded)
    loaded.result()  # re-raise its failure
