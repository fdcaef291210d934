"""Generation use cases: create, get, list, update, regenerate, delete — each one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobStore
from server.domain.errors import ValidationErrors, not_found
from server.domain.generations import (
    CreateGeneration,
    EventType,
    Generation,
    GenerationStatus,
    UpdateGeneration,
)
from server.domain.ids import new_id, require_uuid
from server.domain.paging import Cursor, encode_token, page_request
from server.events.hub import EventHub
from server.services.references import resolve_references
from server.store.db import Database
from server.store.flows import ensure_flow
from server.store.generations import (
    generation_from_row,
    generations_from_rows,
    get_generation_row,
    list_generation_rows,
    record_event,
)
from server.store.idempotency import claim_request_id, fingerprint
from server.store.models import GenerationReferenceRow, GenerationRow, ImageRow


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def generation_prefix(project_id: str, generation_id: str) -> str:
    """Where every stored version of a generation's output lives."""
    return f"projects/{project_id}/generations/{generation_id}/"


@dataclass(frozen=True, slots=True)
class GenerationPage:
    """One page of a generation listing."""

    generations: list[Generation]
    total: int
    limit: int
    offset: int
    has_more: bool
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a delete removed."""

    id: str
    image_deleted: bool


class Generations:
    """The GenerationService use cases over the database, the image store and the hub."""

    def __init__(self, db: Database, blobs: BlobStore, hub: EventHub) -> None:
        self._db = db
        self._blobs = blobs
        self._hub = hub

    async def create(self, project_id: str, command: CreateGeneration) -> Generation:
        """Insert a PENDING generation (or replay an earlier one with the same request_id)."""
        now = utcnow()
        generation_id = new_id()
        async with self._db.write.begin() as session:
            if command.request_id:
                earlier = await claim_request_id(
                    session,
                    project_id,
                    "create_generation",
                    command.request_id,
                    generation_id,
                    fingerprint(command),
                    now,
                )
                if earlier is not None:
                    return await self._load(session, project_id, earlier)
            flow_id = await ensure_flow(session, project_id, command.flow, now)
            uses = await resolve_references(
                session, project_id, command.references, command.prompt, flow_id
            )
            row = GenerationRow(
                id=generation_id,
                project_id=project_id,
                flow_id=flow_id,
                input_prompt=command.prompt,
                enhanced_prompt=None,
                auto_enhance=command.auto_enhance,
                enhancement_template=command.enhancement_template,
                aspect_ratio=command.aspect_ratio,
                status=GenerationStatus.PENDING.value,
                output_image_id=None,
                requested_references=list(command.references),
                alias=command.alias,
                flow_alias=command.flow_alias,
                meta=command.meta,
                error_code=None,
                error_message=None,
                processing_time_ms=None,
                run=1,
                attempt=0,
                revision=1,
                lease_token=None,
                lease_expire_time=None,
                create_time=now,
                update_time=now,
                start_time=None,
                complete_time=None,
            )
            session.add(row)
            # No ORM relationship orders these inserts: the row must exist first.
            await session.flush()
            for position, use in enumerate(uses):
                session.add(
                    GenerationReferenceRow(
                        generation_id=generation_id,
                        position=position,
                        image_id=use.image_id,
                        alias=use.alias,
                    )
                )
            await session.flush()
            generation = await generation_from_row(session, row)
            await record_event(session, generation, EventType.CREATED, now)
        self._published(generation, work=True)
        return generation

    async def get(self, project_id: str, generation_id: str) -> Generation:
        """One generation of the project."""
        generation_id = require_uuid("id", generation_id)
        async with self._db.read() as session:
            return await self._load(session, project_id, generation_id)

    async def list(
        self,
        project_id: str,
        *,
        flow_id: str = "",
        status: GenerationStatus | None = None,
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
    ) -> GenerationPage:
        """A page of the project's generations, newest first."""
        flow = require_uuid("flow_id", flow_id) if flow_id else None
        filters = ("generations", project_id, flow, status)
        page = page_request(limit, offset, page_token, filters)
        async with self._db.read() as session:
            rows, total, has_more = await list_generation_rows(
                session, project_id, page, flow_id=flow, status=status
            )
            generations = await generations_from_rows(session, rows)
        token = ""
        if has_more and generations:
            last = generations[-1]
            token = encode_token(Cursor(last.create_time, last.id), filters)
        return GenerationPage(generations, total, page.limit, page.offset, has_more, token)

    async def update(
        self, project_id: str, generation_id: str, command: UpdateGeneration
    ) -> Generation:
        """Apply the changed fields; a new prompt or aspect ratio starts a new run."""
        generation_id = require_uuid("id", generation_id)
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await self._row(session, project_id, generation_id)
            rerun = False
            if command.prompt is not None and command.prompt != row.input_prompt:
                row.input_prompt = command.prompt
                rerun = True
            if command.aspect_ratio is not None and command.aspect_ratio != row.aspect_ratio:
                row.aspect_ratio = command.aspect_ratio
                rerun = True
            if command.flow is not None:
                row.flow_id = await ensure_flow(session, project_id, command.flow, now)
                if row.output_image_id:
                    # The output image belongs to its generation's flow.
                    image = await session.get(ImageRow, row.output_image_id)
                    if image is not None:
                        image.flow_id = row.flow_id
            if command.meta is not None:
                row.meta = command.meta
            if rerun:
                _start_new_run(row)
            generation = await self._commit_change(session, row, now)
        self._published(generation, work=rerun)
        return generation

    async def regenerate(
        self, project_id: str, generation_id: str, request_id: str = ""
    ) -> Generation:
        """Run again with the same parameters, from any status (same output image ID)."""
        generation_id = require_uuid("id", generation_id)
        errors = ValidationErrors()
        if len(request_id) > 64:
            errors.add("request_id", "must be at most 64 characters")
        errors.raise_if_any()
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await self._row(session, project_id, generation_id)
            if request_id:
                earlier = await claim_request_id(
                    session,
                    project_id,
                    "regenerate",
                    request_id,
                    generation_id,
                    fingerprint(("regenerate", generation_id)),
                    now,
                )
                if earlier is not None:
                    return await generation_from_row(session, row)
            _start_new_run(row)
            generation = await self._commit_change(session, row, now)
        self._published(generation, work=True)
        return generation

    async def delete(self, project_id: str, generation_id: str) -> Deleted:
        """Delete the generation and its output image, unless the image holds a project alias."""
        generation_id = require_uuid("id", generation_id)
        now = utcnow()
        keep_key: str | None = None
        image_deleted = False
        async with self._db.write.begin() as session:
            row = await self._row(session, project_id, generation_id)
            row.revision += 1
            row.update_time = now
            generation = await generation_from_row(session, row)
            image = (
                await session.get(ImageRow, row.output_image_id) if row.output_image_id else None
            )
            row.output_image_id = None
            await session.flush()
            if image is not None and image.alias:
                image.generation_id = None  # kept for its project alias, unlinked
                keep_key = image.object_key
            elif image is not None:
                await session.delete(image)
                image_deleted = True
            await session.execute(delete(GenerationRow).where(GenerationRow.id == generation_id))
            await record_event(session, generation, EventType.DELETED, now)
        await self._remove_objects(project_id, generation_id, keep_key)
        self._published(generation, work=False)
        return Deleted(generation_id, image_deleted)

    async def _remove_objects(self, project_id: str, generation_id: str, keep: str | None) -> None:
        # After the commit: a crash here leaves objects for the sweeper, never a
        # row pointing at a missing object.
        keys = [
            info.key
            async for info in self._blobs.list(generation_prefix(project_id, generation_id))
            if info.key != keep
        ]
        if keys:
            await self._blobs.delete_many(keys)

    async def _commit_change(
        self, session: AsyncSession, row: GenerationRow, now: datetime
    ) -> Generation:
        row.revision += 1
        row.update_time = now
        await session.flush()
        generation = await generation_from_row(session, row)
        await record_event(session, generation, EventType.UPDATED, now)
        return generation

    async def _row(
        self, session: AsyncSession, project_id: str, generation_id: str
    ) -> GenerationRow:
        row = await get_generation_row(session, project_id, generation_id, for_update=True)
        if row is None:
            raise not_found("generation", generation_id)
        return row

    async def _load(self, session: AsyncSession, project_id: str, generation_id: str) -> Generation:
        row = await get_generation_row(session, project_id, generation_id)
        if row is None:
            raise not_found("generation", generation_id)
        return await generation_from_row(session, row)

    def _published(self, generation: Generation, *, work: bool) -> None:
        self._hub.notify(generation.project_id, generation.id)
        if work:
            self._hub.notify_work()


def _start_new_run(row: GenerationRow) -> None:
    """Back to PENDING for a fresh run; a worker holding the old lease will lose its CAS."""
    row.status = GenerationStatus.PENDING.value
    row.run += 1
    row.enhanced_prompt = None
    row.error_code = None
    row.error_message = None
    row.lease_token = None
    row.lease_expire_time = None
    row.start_time = None
    row.complete_time = None
    row.processing_time_ms = None


async def reference_rows(session: AsyncSession, generation_id: str) -> list[GenerationReferenceRow]:
    """The recorded references of a generation, in order."""
    result = await session.scalars(
        select(GenerationReferenceRow)
        .where(GenerationReferenceRow.generation_id == generation_id)
        .order_by(GenerationReferenceRow.position)
    )
    return list(result.all())
