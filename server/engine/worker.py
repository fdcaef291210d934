"""The worker pool: claim a due generation, enhance, generate, store, finish (once per run)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobNotFoundError, BlobStore
from server.config import Settings
from server.domain.generations import EventType, Generation, GenerationStatus
from server.domain.ids import new_id
from server.domain.images import MIME_EXTENSIONS, ImageSource
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
from server.services.generations import generation_prefix
from server.store.claims import (
    Claim,
    claim_next,
    due_count,
    held_row,
    release_lease,
    renew_lease,
)
from server.store.db import Database
from server.store.generations import generation_from_row, record_event
from server.store.models import FlowAliasRow, GenerationRow, ImageRow

log = structlog.get_logger("imagegen.engine")


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended before it is committed: a picture, or an error."""

    picture: GeneratedPicture | None
    enhanced_prompt: str | None
    error_code: str | None = None
    error_message: str | None = None


class LeaseLostError(Exception):
    """Another party took the generation (regenerated, deleted, or re-claimed after expiry)."""


class Engine:
    """Runs generations with ``settings.workers`` concurrent workers in this process."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        hub: EventHub,
        generator: Generator,
        enhancer: Enhancer,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._db = db
        self._blobs = blobs
        self._hub = hub
        self._generator = generator
        self._enhancer = enhancer
        self._settings = settings
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._closing = False
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.in_flight = 0

    def start(self) -> None:
        """Start the workers."""
        for index in range(self._settings.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"worker-{index}"))
        self._tasks.append(asyncio.create_task(self._measure_queue(), name="queue-depth"))

    async def stop(self, grace: float) -> None:
        """Stop claiming; let running generations finish within ``grace``, hand back the rest."""
        self._closing = True
        self._stopping.set()
        self._hub.work_available.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _work(self) -> None:
        while not self._closing:
            try:
                claim = await self._claim()
            except Exception:
                log.exception("claim_failed")
                await asyncio.sleep(self._settings.poll_interval_seconds)
                continue
            if claim is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._hub.work_available.wait(), self._settings.poll_interval_seconds
                    )
                if not self._closing:
                    self._hub.work_available.clear()
                continue
            await self.run(claim)

    async def _measure_queue(self) -> None:
        # Sampled, not per request: one COUNT every few seconds per process.
        interval = max(self._settings.poll_interval_seconds * 10, 1.0)
        while not self._closing:
            try:
                async with self._db.read() as session:
                    self._metrics.queue_depth.set(await due_count(session, utcnow()))
            except Exception:
                log.warning("queue_depth_unavailable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    async def _claim(self) -> Claim | None:
        async with self._db.write.begin() as session:
            claim = await claim_next(
                session, utcnow(), self._lease, new_id(), skip_locked=not self._db.is_sqlite
            )
        if claim is not None:
            self._hub.notify(claim.generation.project_id, claim.generation.id)
        return claim

    async def run(self, claim: Claim) -> None:
        """Run one claimed generation to SUCCESS or FAILED (or hand it back if stopped)."""
        generation = claim.generation
        bound = log.bind(generation_id=generation.id, attempt=generation.attempt)
        started = time.perf_counter()
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._keep_lease(generation.id, claim.token, lost))
        stored_key: str | None = None
        self.in_flight += 1
        self._metrics.in_flight.inc()
        try:
            outcome = await self._produce(generation, lost)
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            if outcome.picture is not None:
                stored_key = self._object_key(generation, claim.token, outcome.picture.mime_type)
                await self._blobs.put(
                    stored_key, outcome.picture.content, outcome.picture.mime_type
                )
                committed = await self._finish(claim, outcome, stored_key, elapsed_ms)
                if committed:
                    await self._sweep_versions(generation, keep=stored_key)
                    stored_key = None
            else:
                committed = await self._finish(claim, outcome, None, elapsed_ms)
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
        except Exception:
            bound.exception("generation_run_failed")
            await asyncio.shield(self._release(claim))
        finally:
            renewer.cancel()
            if stored_key is not None:
                # Written but never committed: nobody may ever reference it.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._blobs.delete(stored_key))
            # Idle only once nothing of this run is left behind.
            self.in_flight -= 1
            self._metrics.in_flight.dec()

    async def _produce(self, generation: Generation, lost: asyncio.Event) -> Outcome:
        references = await self._reference_pictures(generation)
        enhanced: str | None = None
        if generation.auto_enhance:
            enhanced = await self._enhancer.enhance(
                generation.input_prompt, generation.enhancement_template
            )
        width, height = generation.size
        request = GenerateRequest(
            prompt=enhanced or generation.input_prompt,
            width=width,
            height=height,
            seed=run_seed(generation.id, generation.run),
            references=references,
        )
        attempts = self._settings.max_attempts
        for attempt in range(attempts):
            if lost.is_set():
                raise LeaseLostError
            try:
                picture = await self._generator.generate(request)
                return Outcome(picture, enhanced)
            except GeneratorError as error:
                if error.transient and attempt + 1 < attempts:
                    delay = self._settings.retry_backoff_seconds * (2**attempt)
                    log.warning("generator_retry", code=error.code, delay_seconds=delay)
                    await asyncio.sleep(delay)
                    continue
                return Outcome(None, enhanced, error.code, error.message)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reference_pictures(self, generation: Generation) -> tuple[ReferencePicture, ...]:
        if not generation.references:
            return ()
        async with self._db.read() as session:
            rows = [await session.get(ImageRow, ref.image_id) for ref in generation.references]
        pictures: list[ReferencePicture] = []
        for row in rows:
            if row is None:
                continue  # deleted since the generation was created
            with contextlib.suppress(BlobNotFoundError):
                pictures.append(
                    ReferencePicture(await self._blobs.get(row.object_key), row.mime_type)
                )
        return tuple(pictures)

    def _object_key(self, generation: Generation, token: str, mime_type: str) -> str:
        # Each run writes a new key, so the committed version is never overwritten
        # in place and a half-written object is never what a row points at.
        extension = MIME_EXTENSIONS.get(mime_type, "bin")
        name = f"r{generation.run}-a{generation.attempt}-{token[:8]}.{extension}"
        return generation_prefix(generation.project_id, generation.id) + name

    async def _finish(
        self, claim: Claim, outcome: Outcome, key: str | None, elapsed_ms: int
    ) -> bool:
        """Commit the run's result if the lease is still ours; False if it was superseded."""
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await held_row(session, claim.generation.id, claim.token)
            if row is None:
                return False
            if outcome.picture is not None and key is not None:
                await self._store_output(session, row, outcome.picture, key, now)
                row.status = GenerationStatus.SUCCESS.value
                row.enhanced_prompt = outcome.enhanced_prompt
            else:
                row.status = GenerationStatus.FAILED.value
                row.enhanced_prompt = outcome.enhanced_prompt
                row.error_code = outcome.error_code
                row.error_message = outcome.error_message
            row.processing_time_ms = elapsed_ms
            row.complete_time = now
            row.lease_token = None
            row.lease_expire_time = None
            row.revision += 1
            row.update_time = now
            await session.flush()
            generation = await generation_from_row(session, row)
            await record_event(session, generation, EventType.UPDATED, now)
        self._hub.notify(generation.project_id, generation.id)
        return True

    async def _store_output(
        self,
        session: AsyncSession,
        row: GenerationRow,
        picture: GeneratedPicture,
        key: str,
        now: datetime,
    ) -> None:
        etag = hashlib.sha256(picture.content).hexdigest()[:32]
        image = await session.get(ImageRow, row.output_image_id) if row.output_image_id else None
        if image is not None:
            image.object_key = key
            image.version += 1
            image.mime_type = picture.mime_type
            image.file_size = len(picture.content)
            image.width = picture.width
            image.height = picture.height
            image.etag = etag
            image.flow_id = row.flow_id
            image.update_time = now
            return
        image = ImageRow(
            id=new_id(),
            project_id=row.project_id,
            flow_id=row.flow_id,
            generation_id=row.id,
            source=ImageSource.GENERATED.value,
            alias=None,
            mime_type=picture.mime_type,
            file_size=len(picture.content),
            width=picture.width,
            height=picture.height,
            focal_x=None,
            focal_y=None,
            meta={},
            object_key=key,
            version=1,
            etag=etag,
            create_time=now,
            update_time=now,
        )
        session.add(image)
        await session.flush()
        row.output_image_id = image.id
        # Aliases are given when the output image first exists; later runs keep
        # whatever aliases the image holds then.
        if row.alias:
            await session.execute(
                update(ImageRow)
                .where(ImageRow.project_id == row.project_id, ImageRow.alias == row.alias)
                .values(alias=None)
            )
            await session.flush()
            image.alias = row.alias
        if row.flow_alias and row.flow_id:
            await session.merge(
                FlowAliasRow(flow_id=row.flow_id, alias=row.flow_alias, image_id=image.id)
            )

    async def _sweep_versions(self, generation: Generation, keep: str) -> None:
        # Older versions (earlier runs, or a run whose worker died after writing)
        # are unreferenced once the new version is committed.
        prefix = generation_prefix(generation.project_id, generation.id)
        stale = [info.key async for info in self._blobs.list(prefix) if info.key != keep]
        if stale:
            await self._blobs.delete_many(stale)

    async def _keep_lease(self, generation_id: str, token: str, lost: asyncio.Event) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._db.write.begin() as session:
                    held = await renew_lease(session, generation_id, token, utcnow() + self._lease)
            except Exception:
                log.exception("lease_renewal_failed", generation_id=generation_id)
                continue
            if not held:
                lost.set()
                return

    async def _release(self, claim: Claim) -> None:
        with contextlib.suppress(Exception):
            async with self._db.write.begin() as session:
                await release_lease(session, claim.generation.id, claim.token, utcnow())
            self._hub.notify_work()


def run_seed(generation_id: str, run: int) -> int:
    """The generator seed of one run: stable for a run, new for each regeneration."""
    digest = hashlib.sha256(f"{generation_id}:{run}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
