"""The engine: claim due generations in batches, run each (enhance, generate, store, finish).

How many generations run at once (``workers``) is separate from how many threads draw
pictures locally (the local generator's executor): a run waiting on a hosted model is
an asyncio task holding no thread and no database connection, so one process keeps
thousands in flight. A run's slot is its generator call: once the picture is made, the
slot goes to the next generation while the picture is stored and the result committed
(at most ``workers`` runs do that at once, so finished pictures cannot pile up). One
dispatcher claims as many as there are free slots (up to ``claim_batch`` per
transaction), and one lease keeper renews every held lease in one statement; runs touch
the database only to read their references and to finish. Claims go first: a run that
has made its picture stores it once the dispatcher has claimed for the freed slots (or
after at most ``_CLAIMS_FIRST_MAX_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass
from datetime import timedelta

import structlog

from server.blobs.base import BlobNotFoundError, BlobStore
from server.blobs.keys import generation_output_key, generation_prefix
from server.domain import backoff
from server.domain.clock import utcnow
from server.domain.generations import Generation
from server.domain.ids import new_id
from server.domain.images import StoredContent
from server.domain.lifecycle import DEADLINE_EXCEEDED
from server.engine.enhancers.llm import Enhancement, enhance_noted
from server.engine.finisher import Finisher
from server.engine.generators.base import (
    Enhancer,
    GeneratedPicture,
    GenerateRequest,
    Generator,
    GeneratorError,
    ReferencePicture,
)
from server.events.hub import EventHub
from server.metrics import Metrics
from server.store import generations as owner
from server.store.db import Database
from server.store.generation_queries import any_overdue, due_count
from server.store.generations import Claim, RunResult
from server.store.images import image_rows_by_id
from server.store.outages import Dependencies, outage_of

log = structlog.get_logger("imagegen.engine")

# How long the dispatcher lets freed run slots accumulate before it claims for them.
_CLAIM_COALESCE_SECONDS = 0.02
# Longest a run that has made its picture waits for the claims of the freed slots before
# it stores and commits anyway (a claim slowed by a busy database holds no result longer).
_CLAIMS_FIRST_MAX_SECONDS = 0.25

# A Retry-After longer than this is cut short (the attempt budget still bounds the run).
MAX_RETRY_AFTER_SECONDS = 60.0
# Longest pause of an idle worker between claims while the database is unreachable.
MAX_CLAIM_BACKOFF_SECONDS = 5.0


async def _coalescing_window_since(start: float) -> None:
    """Sleep out what is left of the claim-coalescing window opened at ``start``
    (``time.monotonic()``)."""
    left = _CLAIM_COALESCE_SECONDS - (time.monotonic() - start)
    if left > 0:
        await asyncio.sleep(left)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What the engine reads of the settings (the composition root fills it in)."""

    workers: int
    lease_seconds: float
    max_attempts: int
    retry_backoff_seconds: float
    poll_interval_seconds: float
    claim_batch: int = 32
    # The longest pause between two tries to store a picture, and before a generation
    # handed back after a failed run is claimed again.
    retry_backoff_max_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended before it is committed: a picture, or an error."""

    picture: GeneratedPicture | None
    enhancement: Enhancement | None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def enhanced_prompt(self) -> str | None:
        """The prompt the enhancer wrote, if enhancement ran."""
        return self.enhancement.prompt if self.enhancement else None

    def result(self, elapsed_ms: int, output: StoredContent | None = None) -> RunResult:
        """What the store commits for this outcome (``output``: the stored picture, if any)."""
        enhancement = self.enhancement
        return RunResult(
            enhanced_prompt=self.enhanced_prompt,
            elapsed_ms=elapsed_ms,
            output=output,
            error_code=self.error_code,
            error_message=self.error_message,
            enhanced_by=enhancement.enhanced_by if enhancement else None,
            enhancement_fallback_reason=enhancement.fallback_reason if enhancement else None,
        )


class LeaseLostError(Exception):
    """Another party took the generation (regenerated, deleted, or re-claimed after expiry)."""


class Engine:
    """Runs up to ``settings.workers`` generations at once in this process."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        hub: EventHub,
        generator: Generator,
        enhancer: Enhancer,
        settings: EngineSettings,
        metrics: Metrics | None = None,
        dependencies: Dependencies | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        # Outages are reported there (logged once, with a count), not as a traceback each.
        self._dependencies = dependencies or Dependencies()
        self._db = db
        self._blobs = blobs
        self._hub = hub
        self._generator = generator
        self._enhancer = enhancer
        self.settings = settings
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._closing = False
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        # Set while the dispatcher waits (no free slot, no due work, a failed claim's
        # pause) or is gone: what runs that made their picture wait for (_claims_first).
        self._dispatcher_idle = asyncio.Event()
        self._dispatcher_idle.set()
        # Whether the dispatcher waits for a slot (a freed one is claimed for at once).
        self._awaiting_slot = False
        # When the first slot freed since the last claim was freed (None: none since).
        self._first_freed: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[None]] = set()
        # The lease tokens of the runs still producing (enhancing, generating): these hold
        # the ``workers`` slots.
        self._producing: set[str] = set()
        # generation ID -> (lease token, set when the lease is lost)
        self._held: dict[str, tuple[str, asyncio.Event]] = {}
        # The runs not yet finishing (a subset of _held) whose lease a change may take
        # (cancel, regenerate, delete): the lease checker looks at those that changed.
        self._watched: dict[str, tuple[str, asyncio.Event]] = {}
        self._changed: set[str] = set()
        self._lease_changes = asyncio.Event()
        hub.add_listener(_LeaseChanges(self))
        # Finishes share transactions: on SQLite creates and claims do not queue behind
        # one transaction per finished run; on PostgreSQL a round of runs ending together
        # costs a few BEGINs, COMMITs and project outbox locks, not one per run.
        self._finisher = Finisher(db)
        self.in_flight = 0

    def start(self) -> None:
        """Start the dispatcher and the lease keeper (no runs at all with zero workers)."""
        if self.settings.workers > 0:
            self._tasks.append(asyncio.create_task(self._dispatch(), name="dispatcher"))
            self._tasks.append(asyncio.create_task(self._keep_leases(), name="lease-keeper"))
            self._tasks.append(asyncio.create_task(self._check_leases(), name="lease-checker"))
        self._tasks.append(asyncio.create_task(self._measure_queue(), name="queue-depth"))
        self._tasks.append(asyncio.create_task(self._expire_overdue(), name="deadlines"))

    async def stop(self, grace: float) -> None:
        """Stop claiming; let running generations finish within ``grace``, hand back the rest."""
        self._closing = True
        self._stopping.set()
        self._hub.work_available.set()
        self._slot_freed.set()
        dispatcher = [task for task in self._tasks if task.get_name() == "dispatcher"]
        if dispatcher:
            await asyncio.gather(*dispatcher, return_exceptions=True)
        if self._runs:
            # Cancelled runs hand their lease back (see run), so another worker starts at once.
            _, pending = await asyncio.wait(set(self._runs), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _dispatch(self) -> None:
        try:
            await self._claim_for_free_slots()
        finally:
            self._dispatcher_idle.set()  # nothing left to wait for

    async def _claim_for_free_slots(self) -> None:
        failures = 0
        while not self._closing:
            free = self._free_slots()
            if free <= 0:
                self._slot_freed.clear()
                self._dispatcher_idle.set()
                self._awaiting_slot = True
                try:
                    await self._slot_freed.wait()
                finally:
                    self._awaiting_slot = False
                continue
            self._dispatcher_idle.clear()
            if free < self.settings.claim_batch and self._runs:
                # Runs are finishing one by one: gather a few freed slots into one
                # claim transaction instead of one transaction per slot. The window
                # opens when the first of them was freed: slots freed while the last
                # claim was being written have waited already.
                await _coalescing_window_since(self._first_freed or 0.0)
                free = self._free_slots()
            self._first_freed = None
            wanted = min(free, self.settings.claim_batch)
            claimed_at = time.monotonic()
            try:
                claims = await self._claim(wanted)
            except Exception as error:
                self._report(error, "claim_failed")
                # Back off while claims fail (an outage), up to a few seconds.
                delay = self.settings.poll_interval_seconds * 2 ** min(failures, 10)
                failures += 1
                self._dispatcher_idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), min(delay, MAX_CLAIM_BACKOFF_SECONDS)
                    )
                continue
            failures = 0
            for claim in claims:
                self._producing.add(claim.token)
                task = asyncio.create_task(self.run(claim), name=f"run-{claim.generation.id}")
                self._runs.add(task)
                task.add_done_callback(functools.partial(self._run_done, claim.token))
            if len(claims) < wanted and not self._closing:
                # The queue is empty for now: sleep until new work or the next poll.
                self._dispatcher_idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._hub.work_available.wait(), self.settings.poll_interval_seconds
                    )
                if not self._closing:
                    self._hub.work_available.clear()
                    # New work arriving in a burst (creates a few milliseconds apart) is
                    # claimed together: a claim transaction per create would take half
                    # of what SQLite's one writer, or a project's outbox lock, gives the
                    # creates. Work after a quiet spell is claimed at once.
                    await _coalescing_window_since(claimed_at)

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time). A
        cancelled run still hands its lease back, as at any stop."""
        self._closing = True
        self._stopping.set()
        for task in (*self._tasks, *self._runs):
            task.cancel()

    def _free_slots(self) -> int:
        """Slots for new runs: ``workers`` producing at most, and ``workers`` more storing
        and committing (a slow store holds slots, rather than pictures piling up)."""
        workers = self.settings.workers
        return min(workers - len(self._producing), 2 * workers - len(self._runs))

    def _produced(self, token: str) -> None:
        self._producing.discard(token)
        self._freed()

    def _run_done(self, token: str, task: asyncio.Task[None]) -> None:
        # Also a run cancelled before it started (stop) gives its slot back here.
        self._producing.discard(token)
        self._runs.discard(task)
        self._freed()

    def _freed(self) -> None:
        if self._first_freed is None:
            self._first_freed = time.monotonic()
        if self._awaiting_slot:
            self._dispatcher_idle.clear()  # it claims for this slot next
        self._slot_freed.set()

    async def _measure_queue(self) -> None:
        # Sampled, not per request: one COUNT every few seconds per process.
        interval = max(self.settings.poll_interval_seconds * 10, 1.0)
        while not self._closing:
            try:
                async with self._db.read() as session:
                    self._metrics.queue_depth.set(await due_count(session, utcnow()))
            except Exception as error:
                if outage_of(error) is None:
                    log.warning("queue_depth_unavailable")
                else:
                    self._report(error, "queue_depth_unavailable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    async def _expire_overdue(self) -> None:
        # Generations past their timeout end FAILED even when no worker is free
        # (queue time counts); a running worker also stops its own run on time.
        while not self._closing:
            try:
                async with self._db.read() as session:
                    overdue = await any_overdue(session, utcnow())
                expired = []
                if overdue:
                    async with self._db.writing() as session:
                        expired = await owner.expire_overdue(
                            session, utcnow(), skip_locked=not self._db.is_sqlite
                        )
                for generation in expired:
                    log.info("generation_expired", generation_id=generation.id)
                    self._hub.notify(generation.project_id, generation.id)
            except Exception as error:
                self._report(error, "deadline_check_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval_seconds)

    async def _claim(self, count: int) -> list[Claim]:
        async with self._db.writing() as session:
            claims = await owner.claim_due(
                session,
                utcnow(),
                self._lease,
                [new_id() for _ in range(count)],
                skip_locked=not self._db.is_sqlite,
            )
        for claim in claims:
            claimed = claim.generation
            self._hub.notify(
                claimed.project_id,
                claimed.id,
                deliveries=claimed.webhook_url is not None,
                revision=claimed.revision,
            )
        return claims

    async def run(self, claim: Claim) -> None:
        """Run one claimed generation to SUCCESS or FAILED (or hand it back if stopped)."""
        generation = claim.generation
        bound = log.bind(generation_id=generation.id, attempt=generation.attempt)
        started = time.perf_counter()
        lost = asyncio.Event()
        self._held[generation.id] = (claim.token, lost)
        # Cancel/regenerate/delete noticed at once (_check_leases); renewal itself is
        # batched (_keep_leases). No task or subscription per run.
        self._watched[generation.id] = (claim.token, lost)
        stored_key: str | None = None
        self.in_flight += 1
        self._metrics.in_flight.inc()
        try:
            try:
                outcome = await self._produce_in_time(generation, lost)
            finally:
                # The picture is made (or the run is over): the slot goes to the next one.
                self._produced(claim.token)
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            await self._claims_first()
            if outcome.picture is not None:
                picture = outcome.picture
                stored_key = generation_output_key(
                    generation.project_id,
                    generation.id,
                    run=generation.run,
                    attempt=generation.attempt,
                    token=claim.token,
                    mime_type=picture.mime_type,
                )
                await self._store_picture(stored_key, picture, lost)
                content = StoredContent.describe(
                    stored_key, picture.content, picture.mime_type, picture.width, picture.height
                )
                committed = await self._finish(claim, outcome.result(elapsed_ms, content))
                if committed:
                    # Committed: the row points at it now, whatever happens below.
                    kept, stored_key = stored_key, None
                    if generation.attempt > 1:
                        # Only an earlier claim (an earlier run, or a worker that died
                        # after writing) can have left a version behind: the first claim
                        # of a generation has nothing to list.
                        await self._sweep_versions(generation, keep=kept)
            else:
                committed = await self._finish(claim, outcome.result(elapsed_ms))
            if committed:
                outcome_label = "success" if outcome.picture else "failed"
                self._metrics.run_seconds.labels(outcome_label).observe(elapsed_ms / 1000)
            bound.info(
                "generation_finished" if committed else "generation_superseded",
                status="success" if outcome.picture else "failed",
                error_code=outcome.error_code,
                elapsed_ms=elapsed_ms,
            )
        except LeaseLostError:
            bound.info("generation_superseded")
        except asyncio.CancelledError:
            # Shutting down mid-run: hand the lease back so another worker starts at once.
            await asyncio.shield(self._release(claim))
            bound.info("generation_released")
            raise
        except Exception as error:
            self._report(error, "generation_run_failed", generation_id=generation.id)
            # Handed back after a pause, not at once: a dependency that failed this run
            # would fail the next one too, and another worker would spin on it. The pause
            # grows with the generation's runs (a long outage costs few runs each) and is
            # jittered (generations that failed together come back apart).
            delay = backoff.delay(
                self.settings.max_attempts + generation.attempt - 1,
                self.settings.retry_backoff_seconds,
                self.settings.retry_backoff_max_seconds,
            )
            await asyncio.shield(self._release(claim, delay))
            bound.info("generation_handed_back", retry_in_seconds=delay)
        finally:
            self._unwatch(claim)
            if self._held.get(generation.id, (None,))[0] == claim.token:
                del self._held[generation.id]
            if stored_key is not None:
                # Written but never committed: nobody may ever reference it.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._blobs.delete(stored_key))
            # Idle only once nothing of this run is left behind.
            self.in_flight -= 1
            self._metrics.in_flight.dec()

    async def _claims_first(self) -> None:
        """Wait (briefly) until the dispatcher has claimed for the slots freed so far.

        Runs started together make their pictures at about the same moment; storing and
        committing a few hundred results is loop work the claims for their slots would
        queue behind, and each claim starts a generation's wait on its model. Done in
        this order, the next round starts within the claims' own time and the results
        are written during its wait; in the other, each round started later than the
        last (issue 13: 0.83-0.88 of the ideal throughput against 0.90-0.92).
        """
        if self._dispatcher_idle.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLAIMS_FIRST_MAX_SECONDS):
                await self._dispatcher_idle.wait()

    async def _produce_in_time(self, generation: Generation, lost: asyncio.Event) -> Outcome:
        """Produce, abandoning the generator call (task cancellation) when the lease is lost
        (cancelled, regenerated, deleted) or the generation's deadline passes."""
        remaining: float | None = None
        if generation.deadline_time is not None:
            remaining = max(0.0, (generation.deadline_time - utcnow()).total_seconds())
        producing = asyncio.create_task(self._produce(generation, lost))
        lost_waiting = asyncio.create_task(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {producing, lost_waiting}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (producing, lost_waiting):
                task.cancel()
            await asyncio.gather(producing, lost_waiting, return_exceptions=True)
        if producing in done:
            return producing.result()
        if lost_waiting in done:
            raise LeaseLostError
        return Outcome(
            None,
            None,
            DEADLINE_EXCEEDED,
            f"not finished within its timeout of {generation.timeout_ms} ms",
        )

    async def _produce(self, generation: Generation, lost: asyncio.Event) -> Outcome:
        references = await self._reference_pictures(generation)
        enhanced: Enhancement | None = None
        if generation.auto_enhance:
            enhanced = await enhance_noted(
                self._enhancer, generation.input_prompt, generation.enhancement_template
            )
        width, height = generation.size
        request = GenerateRequest(
            prompt=enhanced.prompt if enhanced else generation.input_prompt,
            width=width,
            height=height,
            seed=generation.seed,
            references=references,
            model=generation.model,
            aspect_ratio=generation.aspect_ratio,
            negative_prompt=generation.negative_prompt,
            output_format=generation.output_format,
        )
        attempts = self.settings.max_attempts
        for attempt in range(attempts):
            if lost.is_set():
                raise LeaseLostError
            try:
                picture = await self._generator.generate(request)
                return Outcome(picture, enhanced)
            except GeneratorError as error:
                if error.transient and attempt + 1 < attempts:
                    delay = self.settings.retry_backoff_seconds * (2**attempt)
                    if error.retry_after is not None:
                        # The provider said when to come back; a bounded wait, not a lease hold.
                        delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER_SECONDS))
                    log.warning("generator_retry", code=error.code, delay_seconds=delay)
                    await asyncio.sleep(delay)
                    continue
                return Outcome(None, enhanced, error.code, error.message)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reference_pictures(self, generation: Generation) -> tuple[ReferencePicture, ...]:
        if not generation.references:
            return ()
        async with self._db.read() as session:
            # Images deleted since the generation was created are left out.
            rows = await image_rows_by_id(session, [ref.image_id for ref in generation.references])
        pictures: list[ReferencePicture] = []
        for row in rows:
            with contextlib.suppress(BlobNotFoundError):
                pictures.append(
                    ReferencePicture(await self._blobs.get(row.object_key), row.mime_type)
                )
        return tuple(pictures)

    async def _finish(self, claim: Claim, result: RunResult) -> bool:
        """Commit the run's result if the lease is still ours; False if it was superseded."""
        # The run is over: its lease is no longer watched (its own finish is a change).
        # The commit is a compare-and-set on the token, not the expiry.
        self._unwatch(claim)
        generation = await self._finisher.finish(claim, result)
        if generation is None:
            return False
        self._hub.notify(
            generation.project_id,
            generation.id,
            deliveries=generation.webhook_url is not None,
            revision=generation.revision,
        )
        return True

    async def _sweep_versions(self, generation: Generation, keep: str) -> None:
        # Older versions (earlier runs, or a run whose worker died after writing)
        # are unreferenced once the new version is committed.
        prefix = generation_prefix(generation.project_id, generation.id)
        stale = [info.key async for info in self._blobs.list(prefix) if info.key != keep]
        if stale:
            await self._blobs.delete_many(stale)

    async def _keep_leases(self) -> None:
        # One statement renews every lease this process holds, a third of a lease
        # before it would expire: a few writes a lease period, however many run.
        interval = self.settings.lease_seconds / 3
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            held = {gid: token for gid, (token, _) in self._held.items()}
            if not held:
                continue
            try:
                async with self._db.writing() as session:
                    kept = await owner.renew_leases(session, held, utcnow() + self._lease)
            except Exception as error:
                self._report(error, "lease_renewal_failed", held=str(len(held)))
                continue
            _tell_lost(self._held, held, kept)

    def _unwatch(self, claim: Claim) -> None:
        if self._watched.get(claim.generation.id, (None,))[0] == claim.token:
            del self._watched[claim.generation.id]

    def lease_may_have_changed(self, generation_id: str | None) -> None:
        """A generation changed (None: any may have): check its lease, if a run holds it."""
        if generation_id is None:
            self._changed.update(self._watched)
        elif generation_id in self._watched:
            self._changed.add(generation_id)
        else:
            return
        self._lease_changes.set()

    async def _check_leases(self) -> None:
        """Set a run's ``lost`` once its lease is gone, checking only generations that changed.

        A cancel (or regenerate, or delete) clears the lease. In this process the change
        is told at once; from another replica it arrives as a NOTIFY (PostgreSQL), and at
        the latest the next batch renewal (``_keep_leases``, every ``lease_seconds / 3``)
        finds the lease gone. The changes that arrive together are checked in one read
        (a NOTIFY of this process's own claim, say, that arrives as its runs start).
        """
        while True:
            await self._lease_changes.wait()
            self._lease_changes.clear()
            changed = {gid: self._watched[gid][0] for gid in self._changed if gid in self._watched}
            self._changed.clear()
            if not changed:
                continue
            try:
                async with self._db.read() as session:
                    held = await owner.held_leases(session, changed)
            except Exception as error:
                self._report(error, "lease_check_failed", held=str(len(changed)))
                continue
            _tell_lost(self._watched, changed, held)

    async def _release(self, claim: Claim, delay: float = 0.0) -> None:
        """Hand the generation back: claimable again after ``delay`` seconds."""
        try:
            async with self._db.writing() as session:
                await owner.release_lease(
                    session, claim.generation.id, claim.token, utcnow() + timedelta(seconds=delay)
                )
        except Exception as error:
            # Not lost: the lease runs out and the generation is claimed again then.
            self._report(error, "lease_release_failed", generation_id=claim.generation.id)
            return
        if delay == 0:
            self._hub.notify_work()

    async def _store_picture(
        self, key: str, picture: GeneratedPicture, lost: asyncio.Event
    ) -> None:
        """Write the picture, retrying an unreachable store like generator errors, with the
        delays jittered and capped (see server/domain/backoff.py)."""
        attempts = self.settings.max_attempts
        for attempt in range(attempts):
            if lost.is_set():
                raise LeaseLostError
            try:
                await self._blobs.put(key, picture.content, picture.mime_type)
                return
            except Exception as error:
                if outage_of(error) is None or attempt + 1 >= attempts:
                    raise
                delay = backoff.delay(
                    attempt,
                    self.settings.retry_backoff_seconds,
                    self.settings.retry_backoff_max_seconds,
                )
                self._report(error, "storage_retry")
                await asyncio.sleep(delay)

    def _report(self, error: Exception, event: str, **context: str) -> None:
        self._dependencies.report(error, log, event, **context)


class _LeaseChanges:
    """Tells the engine which generations changed (a ChangeListener of the hub): those a
    run of this engine holds get their lease checked."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def changed(self, project_id: str, generation_id: str, revision: int | None) -> None:
        self._engine.lease_may_have_changed(generation_id)

    def changed_everywhere(self) -> None:
        self._engine.lease_may_have_changed(None)

    @property
    def watcher_count(self) -> int:
        return 0  # no watch streams here


def _tell_lost(
    runs: dict[str, tuple[str, asyncio.Event]],
    asked: dict[str, str],
    still_held: set[tuple[str, str]],
) -> None:
    """Set the ``lost`` event of each run asked about whose lease (generation, token) is
    not among those still held, unless the run has moved on to another token since."""
    for gid, token in asked.items():
        if (gid, token) not in still_held:
            entry = runs.get(gid)
            if entry is not None and entry[0] == token:
                entry[1].set()
