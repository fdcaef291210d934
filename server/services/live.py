"""Live URLs and live scopes: serve a cached image per key, generating it once on a miss."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.clock import utcnow
from server.domain.delivery import DeliveryOptions, nothing_here
from server.domain.errors import DomainError, Status, ValidationErrors, not_found
from server.domain.generations import CreateGeneration, Generation, validate_create
from server.domain.ids import new_id, require_uuid
from server.domain.lifecycle import GenerationStatus
from server.domain.live import (
    DEFAULT_GENERATIONS_LIMIT,
    PENDING_RETRY_SECONDS,
    SCOPE_FULL_RETRY_SECONDS,
    SCOPE_SLUG,
    LiveRequest,
    LiveScope,
    LiveScopeChanges,
    cache_key,
)
from server.domain.rules import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT
from server.events.hub import EventHub, generation_key
from server.services.delivery import Delivery, Part, project_id_by_slug
from server.services.generations import Generations
from server.store import generations as generation_owner
from server.store import live as owner
from server.store.db import Database
from server.store.generation_queries import generation_from_row, load_generation
from server.store.images import get_image_row
from server.store.models import ImageRow, LiveScopeRow

HOUR_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """The settings live URLs read."""

    auto_create_scopes: bool = True
    ip_limit_per_hour: int = 10
    wait_seconds: float = 30.0
    poll_seconds: float = 0.5


@dataclass(frozen=True, slots=True)
class ScopePage:
    """A page of scopes."""

    scopes: list[LiveScope]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        """Whether more scopes follow this page."""
        return self.offset + len(self.scopes) < self.total


@dataclass(frozen=True, slots=True)
class DeletedScope:
    """What deleting a scope removed."""

    slug: str
    deleted_generations: int
    kept_images: int


class IpWindow:
    """Misses that started a generation, per client address, over the last hour (this process).

    Each replica counts its own misses: with N replicas an address may start up
    to N times the limit; an exact shared count would cost a write per miss.
    """

    def __init__(self, limit: int, window_seconds: float = HOUR_SECONDS) -> None:
        self.limit = limit
        self._window = window_seconds
        self._starts: dict[str, deque[float]] = {}

    def take(self, address: str, now: float) -> float | None:
        """Count one start for ``address``: None if allowed, else seconds until one is."""
        if self.limit <= 0:
            return None
        starts = self._starts.setdefault(address, deque())
        while starts and starts[0] <= now - self._window:
            starts.popleft()
        if len(starts) >= self.limit:
            return starts[0] + self._window - now
        starts.append(now)
        return None

    def refund(self, address: str) -> None:
        """Give back the last start (the miss joined another one's generation after all)."""
        starts = self._starts.get(address)
        if starts:
            starts.pop()


class _JoinedError(Exception):
    """Another miss inserted the same key first: roll back and wait for its generation."""


class Live:
    """The LiveService use cases and the live-URL route."""

    def __init__(
        self,
        db: Database,
        hub: EventHub,
        generations: Generations,
        delivery: Delivery,
        settings: LiveSettings,
    ) -> None:
        self._db = db
        self._hub = hub
        self._generations = generations
        self._delivery = delivery
        self._settings = settings
        self._ips = IpWindow(settings.ip_limit_per_hour)

    # --- live URLs ---

    async def serve(self, request: LiveRequest, options: DeliveryOptions) -> AsyncIterator[Part]:
        """The image for a live URL: a hit at once, a miss once its generation is done."""
        command = validate_create(
            prompt=request.prompt,
            aspect_ratio=request.aspect_ratio,
            references=[],
            flow_present=True,
            flow_id="",
            alias="",
            flow_alias="",
            auto_enhance=request.auto_enhance,
            enhancement_template=request.template,
            meta={},
            request_id="",
        )
        if not SCOPE_SLUG.fullmatch(request.scope):
            raise nothing_here()
        key = cache_key(
            command.prompt, command.aspect_ratio, command.auto_enhance, command.enhancement_template
        )
        async with self._db.read() as session:
            project_id = await project_id_by_slug(session, request.project_slug)
            if project_id is None:
                raise nothing_here()
            generation = await _cached(session, project_id, request.scope, key)
        if generation is None:
            generation_id = await self._start(project_id, request, key, command)
        elif generation.status is GenerationStatus.SUCCESS and generation.output_image:
            image_id = generation.output_image.id
            async for part in self._image(project_id, image_id, options, "HIT"):
                yield part
            return
        elif _stale(generation):
            generation_id = await self._restart(project_id, request, key, generation.id)
        else:
            generation_id = generation.id  # pending or running: wait for it
        image_id = await self._wait(project_id, generation_id)
        async for part in self._image(project_id, image_id, options, "MISS"):
            yield part

    def _image(
        self, project_id: str, image_id: str, options: DeliveryOptions, status: str
    ) -> AsyncIterator[Part]:
        async def locate(session: AsyncSession) -> ImageRow | None:
            return await get_image_row(session, project_id, image_id)

        return self._delivery.stream(locate, options, status)

    async def _start(
        self, project_id: str, request: LiveRequest, key: str, command: CreateGeneration
    ) -> str:
        """The generation answering ``key``: a new one, or the one another miss started."""
        for _ in range(3):
            try:
                return await self._start_once(project_id, request, key, command)
            except _JoinedError:
                continue  # another miss inserted the key first (PostgreSQL): join it
        raise DomainError(
            Status.ABORTED, "CONCURRENT_CHANGE", "the live scope changed concurrently; retry"
        )

    async def _start_once(
        self, project_id: str, request: LiveRequest, key: str, command: CreateGeneration
    ) -> str:
        # Live URLs draw with the deployment's default model.
        model = self._generations.resolve_model(command.model)
        now = utcnow()
        reserved = False
        try:
            async with self._db.write.begin() as session:
                scope = await self._scope_for_miss(session, project_id, request.scope)
                entry = await owner.get_entry(session, scope.id, key)
                if entry is not None:
                    return entry.generation_id  # another miss started it: share it
                self._check_may_generate(scope)
                held = (await owner.entry_counts(session, [scope.id])).get(scope.id, 0)
                if held >= scope.new_generations_limit:
                    raise DomainError(
                        Status.RESOURCE_EXHAUSTED,
                        "LIVE_SCOPE_LIMIT",
                        f"this live scope holds its limit of {scope.new_generations_limit} "
                        "generations",
                        retry_after_seconds=SCOPE_FULL_RETRY_SECONDS,
                    )
                reserved = self._reserve(request.client_ip)
                generation = await generation_owner.create(
                    session,
                    generation_id=new_id(),
                    project_id=project_id,
                    flow_id=None,
                    command=command,
                    model=model,
                    uses=[],
                    now=now,
                    live_scope=scope.slug,
                )
                if not await owner.add_entry(session, scope, key, generation.id, now):
                    raise _JoinedError()
        except BaseException:
            if reserved:
                self._ips.refund(request.client_ip)
            raise
        self._hub.notify(project_id, generation.id)
        self._hub.notify_work()
        return generation.id

    async def _restart(
        self, project_id: str, request: LiveRequest, key: str, generation_id: str
    ) -> str:
        """Run again a key's generation that failed, was cancelled or lost its image.

        A restart is a miss like any other (the scope must allow new generations and
        the address must be within its limit), and only one concurrent miss restarts
        it: the others find it pending and wait for the same run.
        """
        now = utcnow()
        reserved = False
        try:
            async with self._db.write.begin() as session:
                scope = await owner.get_scope_row(session, project_id, request.scope)
                entry = await owner.get_entry(session, scope.id, key) if scope else None
                if scope is None or entry is None:
                    raise nothing_here()  # the scope or the entry was deleted meanwhile
                row = await generation_owner.lock(session, project_id, entry.generation_id)
                if not _stale(await generation_from_row(session, row)):
                    return row.id  # another miss restarted it (or it is someone else's now)
                self._check_may_generate(scope)
                reserved = self._reserve(request.client_ip)
                generation = await generation_owner.rerun(session, row, now)
        except BaseException:
            if reserved:
                self._ips.refund(request.client_ip)
            raise
        self._hub.notify(project_id, generation.id)
        self._hub.notify_work()
        return generation.id

    def _check_may_generate(self, scope: LiveScopeRow) -> None:
        if not scope.allow_new_generations:
            raise DomainError(
                Status.PERMISSION_DENIED,
                "LIVE_SCOPE_DISABLED",
                "this live scope serves cached images only; this one is not cached",
            )

    def _reserve(self, address: str) -> bool:
        wait = self._ips.take(address, time.monotonic())
        if wait is not None:
            raise DomainError(
                Status.RESOURCE_EXHAUSTED,
                "LIVE_IP_LIMIT",
                f"at most {self._ips.limit} new live images an hour from one address",
                retry_after_seconds=wait,
            )
        return True

    async def _scope_for_miss(
        self, session: AsyncSession, project_id: str, slug: str
    ) -> LiveScopeRow:
        scope = await owner.get_scope_row(session, project_id, slug)
        if scope is not None:
            return scope
        if not self._settings.auto_create_scopes:
            raise nothing_here()
        created = await owner.add_scope(
            session,
            project_id,
            slug,
            allow_new_generations=True,
            new_generations_limit=DEFAULT_GENERATIONS_LIMIT,
            meta={},
            now=utcnow(),
        )
        if created is None:
            # A concurrent first use created it (ON CONFLICT waited for its commit).
            created = await owner.get_scope_row(session, project_id, slug)
        if created is None:
            raise DomainError(
                Status.ABORTED, "CONCURRENT_CHANGE", "the live scope changed concurrently; retry"
            )
        return created

    async def _wait(self, project_id: str, generation_id: str) -> str:
        """The output image of the generation, once it succeeds, within the bounded wait."""
        deadline = time.monotonic() + self._settings.wait_seconds
        with self._hub.subscribe(generation_key(generation_id)) as subscription:
            while True:
                async with self._db.read() as session:
                    try:
                        generation = await load_generation(session, project_id, generation_id)
                    except DomainError:
                        raise nothing_here() from None  # deleted while we waited
                if generation.status is GenerationStatus.SUCCESS and generation.output_image:
                    return generation.output_image.id
                if _stale(generation):
                    raise DomainError(
                        Status.UNAVAILABLE,
                        "LIVE_GENERATION_FAILED",
                        "the generation of this live image failed; a later request runs it again",
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DomainError(
                        Status.UNAVAILABLE,
                        "LIVE_GENERATION_PENDING",
                        "the image is still being generated; ask again shortly",
                        metadata={"generation_id": generation_id},
                        retry_after_seconds=PENDING_RETRY_SECONDS,
                    )
                # Woken by this replica's hub (or a NOTIFY); the poll covers the rest.
                await subscription.wait(min(left, self._settings.poll_seconds))

    # --- LiveService ---

    async def create_scope(
        self,
        project_id: str,
        slug: str,
        allow_new_generations: bool,
        new_generations_limit: int,
        meta: dict[str, Any],
    ) -> LiveScope:
        """Create a scope; its slug must be free in the project."""
        async with self._db.write.begin() as session:
            row = await owner.add_scope(
                session,
                project_id,
                slug,
                allow_new_generations=allow_new_generations,
                new_generations_limit=new_generations_limit,
                meta=meta,
                now=utcnow(),
            )
            if row is None:
                raise DomainError(
                    Status.ALREADY_EXISTS,
                    "LIVE_SCOPE_EXISTS",
                    f"a live scope {slug!r} already exists",
                    metadata={"slug": slug},
                )
            return owner.scope_from_row(row, 0)

    async def get_scope(self, project_id: str, slug: str) -> LiveScope:
        """One scope by slug."""
        async with self._db.read() as session:
            row = await _require_scope(session, project_id, slug)
            counts = await owner.entry_counts(session, [row.id])
            return owner.scope_from_row(row, counts.get(row.id, 0))

    async def list_scopes(self, project_id: str, slug: str, limit: int, offset: int) -> ScopePage:
        """A page of the project's scopes, newest first."""
        errors = ValidationErrors()
        if not 0 <= limit <= LIST_MAX_LIMIT:
            errors.add("limit", f"must be 0 to {LIST_MAX_LIMIT}")
        if offset < 0:
            errors.add("offset", "must not be negative")
        errors.raise_if_any()
        size = limit or LIST_DEFAULT_LIMIT
        async with self._db.read() as session:
            rows, total = await owner.list_scope_rows(session, project_id, slug, size, offset)
            counts = await owner.entry_counts(session, [row.id for row in rows])
            scopes = [owner.scope_from_row(row, counts.get(row.id, 0)) for row in rows]
        return ScopePage(scopes, total, size, offset)

    async def update_scope(
        self, project_id: str, slug: str, changes: LiveScopeChanges
    ) -> LiveScope:
        """Change a scope's settings or metadata."""
        async with self._db.write.begin() as session:
            row = await _require_scope(session, project_id, slug)
            owner.apply_changes(row, changes)
            await session.flush()
            counts = await owner.entry_counts(session, [row.id])
            return owner.scope_from_row(row, counts.get(row.id, 0))

    async def regenerate(self, project_id: str, slug: str, image_id: str) -> list[Generation]:
        """Run again the generation of one image of the scope, or of every image."""
        wanted = require_uuid("image_id", image_id) if image_id else None
        async with self._db.read() as session:
            row = await _require_scope(session, project_id, slug)
            ids = await owner.scope_generation_ids(session, row.id)
        chosen: list[str] = []
        for generation_id in ids:
            if wanted is None:
                chosen.append(generation_id)
                continue
            generation = await self._generations.get(project_id, generation_id)
            if generation.output_image is not None and generation.output_image.id == wanted:
                chosen.append(generation_id)
        if wanted is not None and not chosen:
            raise not_found("image", wanted)
        return [await self._generations.regenerate(project_id, g) for g in chosen]

    async def delete_scope(self, project_id: str, slug: str) -> DeletedScope:
        """Delete the scope's generations (keeping aliased images, as DeleteGeneration does)
        and then the scope with its entries."""
        async with self._db.read() as session:
            row = await _require_scope(session, project_id, slug)
            ids = await owner.scope_generation_ids(session, row.id)
        deleted = kept = 0
        for generation_id in ids:
            try:
                generation = await self._generations.get(project_id, generation_id)
                result = await self._generations.delete(project_id, generation_id)
            except DomainError as error:
                if error.status is Status.NOT_FOUND:
                    continue  # deleted by someone else meanwhile
                raise
            deleted += 1
            if generation.output_image is not None and not result.image_deleted:
                kept += 1
        async with self._db.write.begin() as session:
            row = await _require_scope(session, project_id, slug)
            await owner.delete_scope(session, row)
        return DeletedScope(slug, deleted, kept)


async def _cached(
    session: AsyncSession, project_id: str, scope_slug: str, key: str
) -> Generation | None:
    """The generation answering a key, if the scope and the entry exist."""
    scope = await owner.get_scope_row(session, project_id, scope_slug)
    entry = await owner.get_entry(session, scope.id, key) if scope is not None else None
    if entry is None:
        return None
    try:
        return await load_generation(session, project_id, entry.generation_id)
    except DomainError as error:
        if error.status is Status.NOT_FOUND:
            return None  # deleted between the two reads; its entry went with it
        raise


def _stale(generation: Generation) -> bool:
    """A key's generation that will not produce its image without a new run (a cancelled
    one too: a later request for the same key runs it again)."""
    return generation.status in (GenerationStatus.FAILED, GenerationStatus.CANCELLED) or (
        generation.status is GenerationStatus.SUCCESS and generation.output_image is None
    )


async def _require_scope(session: AsyncSession, project_id: str, slug: str) -> LiveScopeRow:
    row = await owner.get_scope_row(session, project_id, slug)
    if row is None:
        raise not_found("live scope", slug)
    return row
