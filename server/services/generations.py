"""Generation use cases: create, get, list, update, regenerate, delete — each one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobStore
from server.blobs.keys import generation_prefix
from server.domain.clock import utcnow
from server.domain.errors import ValidationErrors
from server.domain.fields import check_request_id
from server.domain.generations import CreateGeneration, Generation, UpdateGeneration
from server.domain.ids import new_id, require_uuid
from server.domain.lifecycle import GenerationStatus
from server.domain.models import LOCAL_ONLY, ModelCatalog, ModelRef
from server.domain.paging import Page, keyset_page, page_request
from server.events.hub import EventHub
from server.services.references import resolve_references
from server.store import generations as owner
from server.store.db import Database
from server.store.flows import ensure_flow
from server.store.generation_queries import (
    fetch_generation,
    fetch_generation_page,
    generation_from_row,
    load_generation,
)
from server.store.group_commit import GroupCommit
from server.store.idempotency import claim_request_id, fingerprint
from server.webhooks.guard import require_public


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a delete removed."""

    id: str
    image_deleted: bool


class Generations:
    """The GenerationService use cases over the database, the image store and the hub."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        hub: EventHub,
        catalog: ModelCatalog = LOCAL_ONLY,
        *,
        webhook_allow_private: bool = False,
        create_batch_wait: float = 0.0,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._hub = hub
        self._catalog = catalog
        self._webhook_allow_private = webhook_allow_private
        # The shared transactions creates go in (store/group_commit.py).
        self.creates = GroupCommit(
            db,
            wait=create_batch_wait,
            begin_batch=owner.defer_create_inserts,
            end_batch=owner.write_deferred,
        )

    async def create(self, project_id: str, command: CreateGeneration) -> Generation:
        """Insert a PENDING generation (or replay an earlier one with the same request_id)."""
        # Before any write: a model this deployment cannot run is refused at once.
        model = self._catalog.resolve(command.model)
        if command.webhook is not None:
            # Before the transaction: a DNS lookup must not hold the writer.
            await require_public(command.webhook.url, allow_private=self._webhook_allow_private)
        now = utcnow()
        generation_id = new_id()
        digest = fingerprint(command) if command.request_id else ""

        async def write(session: AsyncSession) -> Generation:
            if command.request_id:
                earlier = await claim_request_id(
                    session,
                    project_id,
                    "create_generation",
                    command.request_id,
                    generation_id,
                    digest,
                    now,
                )
                if earlier is not None:
                    # It may have been made by an earlier create of this batch.
                    await owner.write_deferred(session)
                    return await load_generation(session, project_id, earlier)
            flow_id = await ensure_flow(session, project_id, command.flow, now)
            uses = await resolve_references(
                session, project_id, command.references, command.prompt, flow_id
            )
            return await owner.create(
                session,
                generation_id=generation_id,
                project_id=project_id,
                flow_id=flow_id,
                command=command,
                model=model,
                uses=uses,
                now=now,
            )

        # Creates arriving together share a transaction (store/group_commit.py). The hub
        # hears of a new generation once it is committed, whether or not its caller waits.
        def created(generation: Generation) -> None:
            if generation.id == generation_id:  # not a replay of an earlier create
                self._published(generation, work=True)

        return await self.creates.run(write, group=project_id, committed=created)

    def resolve_model(self, requested: ModelRef | None) -> ModelRef:
        """The model a new generation would run with (MODEL_UNAVAILABLE if not offered)."""
        return self._catalog.resolve(requested)

    async def get(self, project_id: str, generation_id: str) -> Generation:
        """One generation of the project."""
        generation_id = require_uuid("id", generation_id)
        return await fetch_generation(self._db, project_id, generation_id)

    async def list(
        self,
        project_id: str,
        *,
        flow_id: str = "",
        status: GenerationStatus | None = None,
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
    ) -> Page[Generation]:
        """A page of the project's generations, newest first."""
        flow = require_uuid("flow_id", flow_id) if flow_id else None
        filters = ("generations", project_id, flow, status)
        page = page_request(limit, offset, page_token, filters)
        generations, total, has_more = await fetch_generation_page(
            self._db, project_id, page, flow_id=flow, status=status
        )
        return keyset_page(generations, total, page, has_more, filters)

    async def update(
        self, project_id: str, generation_id: str, command: UpdateGeneration
    ) -> Generation:
        """Apply the changed fields; a new prompt or aspect ratio starts a new run."""
        generation_id = require_uuid("id", generation_id)
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await owner.lock(session, project_id, generation_id)
            generation, rerun = await owner.change(session, project_id, row, command, now)
        self._published(generation, work=rerun)
        return generation

    async def regenerate(
        self, project_id: str, generation_id: str, request_id: str = ""
    ) -> Generation:
        """Run again with the same parameters, from any status (same output image ID)."""
        generation_id = require_uuid("id", generation_id)
        errors = ValidationErrors()
        key = check_request_id(errors, request_id)
        errors.raise_if_any()
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await owner.lock(session, project_id, generation_id)
            if key:
                earlier = await claim_request_id(
                    session,
                    project_id,
                    "regenerate",
                    key,
                    generation_id,
                    fingerprint({"regenerate": generation_id}),
                    now,
                )
                if earlier is not None:
                    return await generation_from_row(session, row)
            generation = await owner.rerun(session, row, now)
        self._published(generation, work=True)
        return generation

    async def cancel(self, project_id: str, generation_id: str) -> Generation:
        """Cancel a PENDING or PROCESSING generation; its running worker abandons the run."""
        generation_id = require_uuid("id", generation_id)
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await owner.lock(session, project_id, generation_id)
            generation = await owner.cancel(session, row, now)
        self._published(generation, work=False)
        return generation

    async def delete(self, project_id: str, generation_id: str) -> Deleted:
        """Delete the generation and its output image, unless the image holds a project alias."""
        generation_id = require_uuid("id", generation_id)
        now = utcnow()
        async with self._db.write.begin() as session:
            row = await owner.lock(session, project_id, generation_id)
            removed = await owner.delete(session, row, now)
        await self._remove_objects(project_id, generation_id, removed.kept_key)
        self._published(removed.generation, work=False)
        return Deleted(generation_id, removed.image_deleted)

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

    def _published(self, generation: Generation, *, work: bool) -> None:
        self._hub.notify(
            generation.project_id,
            generation.id,
            deliveries=generation.webhook_url is not None,
            revision=generation.revision,
        )
        if work:
            self._hub.notify_work()
