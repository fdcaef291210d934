"""Webhook use cases: the project's record of its deliveries and their attempts."""

from __future__ import annotations

from server.domain.ids import require_uuid
from server.domain.paging import Page, page_request
from server.domain.webhooks import WebhookDelivery
from server.store import webhooks as outbox
from server.store.db import Database


class Deliveries:
    """Reads the webhook outbox of a project (the dispatcher in the engine writes it)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(
        self, project_id: str, *, generation_id: str = "", limit: int = 0, offset: int = 0
    ) -> Page[WebhookDelivery]:
        """A page of deliveries, newest first, each with every attempt made."""
        generation = require_uuid("generation_id", generation_id) if generation_id else None
        page = page_request(limit, offset, "", ("webhook_deliveries", project_id, generation))
        async with self._db.read() as session:
            items, total = await outbox.list_deliveries(
                session, project_id, generation_id=generation, limit=page.limit, offset=page.offset
            )
        return Page(items, total, page.limit, page.offset, page.offset + len(items) < total)
