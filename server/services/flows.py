"""Flow use cases: list, get, list contents, merge and remove aliases, regenerate, delete."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobStore
from server.domain.aliases import alias_problem
from server.domain.clock import utcnow
from server.domain.errors import DomainError, Status, invalid, not_found
from server.domain.flows import Flow, FlowDeleted, check_flow_aliases
from server.domain.generations import Generation
from server.domain.ids import require_uuid
from server.domain.images import Image
from server.domain.paging import Page, keyset_page, page_request
from server.events.hub import EventHub
from server.services.generations import Generations
from server.services.images import Images
from server.store import generations as generation_owner
from server.store.aliases import remove_flow_alias, set_flow_alias
from server.store.db import Database
from server.store.flows import (
    delete_flow,
    flows_from_rows,
    generation_ids_of_flow,
    get_flow_row,
    latest_generation_id,
    list_flow_rows,
    touch_flow,
)
from server.store.generation_queries import live_outputs
from server.store.images import get_image_row, image_rows_of_flow, unlink_from_flow
from server.store.models import FlowRow


class Flows:
    """The FlowService use cases; generation work is delegated to Generations."""

    def __init__(
        self, db: Database, blobs: BlobStore, hub: EventHub, generations: Generations
    ) -> None:
        self._db = db
        self._generations = generations
        self._images = Images(db, blobs, hub)

    async def list(
        self, project_id: str, *, limit: int = 0, offset: int = 0, page_token: str = ""
    ) -> Page[Flow]:
        """A page of the project's flows, newest first."""
        filters = ("flows", project_id)
        page = page_request(limit, offset, page_token, filters)
        async with self._db.read() as session:
            rows, total, has_more = await list_flow_rows(session, project_id, page)
            flows = await flows_from_rows(session, rows)
        return keyset_page(flows, total, page, has_more, filters)

    async def get(self, project_id: str, flow_id: str) -> Flow:
        """One flow with its alias map and counts."""
        flow_id = require_uuid("id", flow_id)
        async with self._db.read() as session:
            return await self._load(session, project_id, flow_id)

    async def list_generations(
        self, project_id: str, flow_id: str, *, limit: int = 0, offset: int = 0
    ) -> Page[Generation]:
        """A page of the flow's generations, newest first."""
        flow_id = await self._existing(project_id, flow_id)
        return await self._generations.list(project_id, flow_id=flow_id, limit=limit, offset=offset)

    async def list_images(
        self, project_id: str, flow_id: str, *, limit: int = 0, offset: int = 0
    ) -> Page[Image]:
        """A page of the flow's images, newest first."""
        flow_id = await self._existing(project_id, flow_id)
        return await self._images.list(project_id, flow_id=flow_id, limit=limit, offset=offset)

    async def update_aliases(self, project_id: str, flow_id: str, aliases: dict[str, str]) -> Flow:
        """Merge alias → image ID entries into the flow's alias map (existing ones repoint)."""
        flow_id = require_uuid("id", flow_id)
        wanted = check_flow_aliases(aliases)
        now = utcnow()
        async with self._db.write.begin() as session:
            flow = await self._row(session, project_id, flow_id)
            for alias, image_id in wanted.items():
                if await get_image_row(session, project_id, image_id) is None:
                    raise DomainError(
                        Status.NOT_FOUND,
                        "IMAGE_NOT_FOUND",
                        f"image {image_id!r} (for {alias}) not found",
                        metadata={"resource": "image", "id": image_id, "alias": alias},
                    )
                await set_flow_alias(session, flow_id, alias, image_id)
            if wanted:
                touch_flow(flow, now)
            await session.flush()
            return await self._load(session, project_id, flow_id)

    async def delete_alias(self, project_id: str, flow_id: str, alias: str) -> Flow:
        """Remove one alias from the flow's alias map."""
        flow_id = require_uuid("id", flow_id)
        if not alias:
            raise invalid("alias", "is required")
        problem = alias_problem(alias)
        if problem:
            raise invalid("alias", problem)
        now = utcnow()
        async with self._db.write.begin() as session:
            flow = await self._row(session, project_id, flow_id)
            if not await remove_flow_alias(session, flow_id, alias):
                raise DomainError(
                    Status.NOT_FOUND,
                    "FLOW_ALIAS_NOT_FOUND",
                    f"flow {flow_id} has no alias {alias!r}",
                    metadata={"flow_id": flow_id, "alias": alias},
                )
            touch_flow(flow, now)
            await session.flush()
            return await self._load(session, project_id, flow_id)

    async def regenerate(self, project_id: str, flow_id: str) -> Generation:
        """Run the flow's most recently created generation again."""
        flow_id = require_uuid("id", flow_id)
        async with self._db.read() as session:
            await self._load_row(session, project_id, flow_id)
            latest = await latest_generation_id(session, project_id, flow_id)
        if latest is None:
            raise DomainError(
                Status.FAILED_PRECONDITION,
                "FLOW_HAS_NO_GENERATIONS",
                f"flow {flow_id} has no generation to regenerate",
                metadata={"flow_id": flow_id},
            )
        return await self._generations.regenerate(project_id, latest)

    async def delete(self, project_id: str, flow_id: str) -> FlowDeleted:
        """Delete the flow, its generations (spec §2.8) and its images without a project alias.

        Images holding a project alias stay, unlinked from the flow. So does an
        image that is the output of a generation that now lives in another flow
        (moved there by UpdateGeneration): deleting it would strip that
        generation of its output.
        """
        flow_id = await self._existing(project_id, flow_id)
        async with self._db.read() as session:
            generation_ids = await generation_ids_of_flow(session, project_id, flow_id)
        generations_deleted = images_deleted = 0
        for generation_id in generation_ids:
            try:
                deleted = await self._generations.delete(project_id, generation_id)
            except DomainError as error:
                if error.status is not Status.NOT_FOUND:
                    raise
                continue  # deleted by someone else meanwhile
            generations_deleted += 1
            images_deleted += int(deleted.image_deleted)
        now = utcnow()
        async with self._db.write.begin() as session:
            await self._row(session, project_id, flow_id)
            rows = await image_rows_of_flow(session, project_id, flow_id)
            outputs = await live_outputs(session, [row.id for row in rows])
            doomed = [row for row in rows if not row.alias and row.id not in outputs]
            unlink_from_flow([row for row in rows if row.alias or row.id in outputs], now)
            keys = [row.object_key for row in doomed]
            changed = await generation_owner.remove_images(session, doomed, now)
            # Generations created in the flow since we listed them are unlinked
            # by the foreign key (SET NULL), like the kept images.
            await delete_flow(session, flow_id)
        await self._images.discard_objects(keys)
        self._images.published(changed)
        return FlowDeleted(flow_id, generations_deleted, images_deleted + len(doomed))

    async def _existing(self, project_id: str, flow_id: str) -> str:
        flow_id = require_uuid("id", flow_id)
        async with self._db.read() as session:
            await self._load_row(session, project_id, flow_id)
        return flow_id

    async def _row(self, session: AsyncSession, project_id: str, flow_id: str) -> FlowRow:
        row = await get_flow_row(session, project_id, flow_id, for_update=True)
        if row is None:
            raise not_found("flow", flow_id)
        return row

    async def _load_row(self, session: AsyncSession, project_id: str, flow_id: str) -> FlowRow:
        row = await get_flow_row(session, project_id, flow_id)
        if row is None:
            raise not_found("flow", flow_id)
        return row

    async def _load(self, session: AsyncSession, project_id: str, flow_id: str) -> Flow:
        row = await self._load_row(session, project_id, flow_id)
        (flow,) = await flows_from_rows(session, [row])
        return flow
