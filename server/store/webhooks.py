"""The one owner of the webhook outbox: enqueue with a change, claim, record attempts, list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.generations import Generation, to_snapshot
from server.domain.ids import new_id
from server.domain.webhooks import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)
from server.store.models import ProjectRow, WebhookAttemptRow, WebhookDeliveryRow


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery a dispatcher holds for one attempt, with what it needs to send it."""

    id: str
    project_id: str
    generation_id: str
    event_type: str
    url: str
    snapshot: dict[str, Any]
    attempts: int
    create_time: datetime
    secret: str | None
    token: str


async def enqueue(
    session: AsyncSession, generation: Generation, event: WebhookEvent, now: datetime
) -> None:
    """Add a delivery of ``event`` about ``generation`` (inside the change's transaction)."""
    assert generation.webhook_url is not None
    session.add(
        WebhookDeliveryRow(
            id=new_id(),
            project_id=generation.project_id,
            generation_id=generation.id,
            event_type=event.type_name,
            url=generation.webhook_url,
            snapshot=to_snapshot(generation),
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_time=now,
            claim_token=None,
            claim_expire_time=None,
            create_time=now,
            finish_time=None,
        )
    )


def _due(now: datetime) -> list[Any]:
    return [
        WebhookDeliveryRow.state == DeliveryState.PENDING.value,
        WebhookDeliveryRow.next_attempt_time <= now,
        or_(
            WebhookDeliveryRow.claim_expire_time.is_(None),
            WebhookDeliveryRow.claim_expire_time <= now,
        ),
    ]


async def any_due(session: AsyncSession, now: datetime) -> bool:
    """Whether some delivery is due (a read, so idle dispatchers take no write lock)."""
    found = await session.scalar(select(WebhookDeliveryRow.id).where(*_due(now)).limit(1))
    return found is not None


async def claim_due(
    session: AsyncSession, now: datetime, hold: timedelta, token: str, *, skip_locked: bool
) -> ClaimedDelivery | None:
    """Hold the oldest due delivery under ``token`` until ``now + hold`` (caller's transaction).

    Due means pending, its next attempt time reached, and not held by a live
    claim. A dispatcher that dies mid-attempt loses its hold when it expires,
    so the delivery is sent again (at least once, never twice at a time).
    """
    query = (
        select(WebhookDeliveryRow)
        .where(*_due(now))
        .order_by(WebhookDeliveryRow.next_attempt_time)
        .limit(1)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    row: WebhookDeliveryRow | None = await session.scalar(query)
    if row is None:
        return None
    row.claim_token = token
    row.claim_expire_time = now + hold
    secret = await session.scalar(
        select(ProjectRow.webhook_secret).where(ProjectRow.id == row.project_id)
    )
    return ClaimedDelivery(
        id=row.id,
        project_id=row.project_id,
        generation_id=row.generation_id,
        event_type=row.event_type,
        url=row.url,
        snapshot=dict(row.snapshot),
        attempts=row.attempts,
        create_time=row.create_time,
        secret=secret,
        token=token,
    )


async def record_attempt(
    session: AsyncSession,
    claim: ClaimedDelivery,
    *,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    started: datetime,
    next_attempt_time: datetime | None,
    now: datetime,
) -> bool:
    """Record one attempt and what follows it; False if the claim was lost meanwhile.

    ``error`` None means delivered; otherwise ``next_attempt_time`` None means
    the retry window closed (FAILED).
    """
    row: WebhookDeliveryRow | None = await session.scalar(
        select(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.id == claim.id, WebhookDeliveryRow.claim_token == claim.token)
        .with_for_update()
    )
    if row is None:
        return False
    row.attempts += 1
    session.add(
        WebhookAttemptRow(
            delivery_id=row.id,
            number=row.attempts,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            create_time=started,
        )
    )
    row.claim_token = None
    row.claim_expire_time = None
    if error is None:
        row.state = DeliveryState.DELIVERED.value
        row.next_attempt_time = None
        row.finish_time = now
    elif next_attempt_time is None:
        row.state = DeliveryState.FAILED.value
        row.next_attempt_time = None
        row.finish_time = now
    else:
        row.next_attempt_time = next_attempt_time
    return True


async def prune_deliveries(session: AsyncSession, before: datetime, batch: int) -> int:
    """Delete up to ``batch`` finished deliveries (and their attempts) finished before
    ``before``; returns how many. Pending ones stay, however old: they are still owed."""
    ids = list(
        await session.scalars(
            select(WebhookDeliveryRow.id)
            .where(
                WebhookDeliveryRow.finish_time.is_not(None),
                WebhookDeliveryRow.finish_time < before,
            )
            .limit(batch)
        )
    )
    if not ids:
        return 0
    # Explicitly rather than by ON DELETE CASCADE alone: the same on every database.
    await session.execute(delete(WebhookAttemptRow).where(WebhookAttemptRow.delivery_id.in_(ids)))
    await session.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.id.in_(ids)))
    return len(ids)


async def list_deliveries(
    session: AsyncSession,
    project_id: str,
    *,
    generation_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[WebhookDelivery], int]:
    """A page of the project's deliveries, newest first, each with its attempts; and the total."""
    conditions = [WebhookDeliveryRow.project_id == project_id]
    if generation_id:
        conditions.append(WebhookDeliveryRow.generation_id == generation_id)
    total = await session.scalar(
        select(func.count()).select_from(WebhookDeliveryRow).where(*conditions)
    )
    rows = (
        await session.scalars(
            select(WebhookDeliveryRow)
            .where(*conditions)
            .order_by(WebhookDeliveryRow.create_time.desc(), WebhookDeliveryRow.id.desc())
            .offset(offset)
            .limit(limit)
        )
    ).all()
    attempts = await _attempts(session, [row.id for row in rows])
    return [_delivery(row, attempts.get(row.id, [])) for row in rows], total or 0


async def _attempts(
    session: AsyncSession, delivery_ids: Sequence[str]
) -> dict[str, list[WebhookAttempt]]:
    found: dict[str, list[WebhookAttempt]] = {}
    if not delivery_ids:
        return found
    rows = await session.scalars(
        select(WebhookAttemptRow)
        .where(WebhookAttemptRow.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttemptRow.delivery_id, WebhookAttemptRow.number)
    )
    for row in rows:
        found.setdefault(row.delivery_id, []).append(
            WebhookAttempt(row.number, row.status_code, row.latency_ms, row.error, row.create_time)
        )
    return found


def _delivery(row: WebhookDeliveryRow, attempts: list[WebhookAttempt]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        project_id=row.project_id,
        generation_id=row.generation_id,
        event_type=row.event_type,
        url=row.url,
        state=DeliveryState(row.state),
        attempts=tuple(attempts),
        create_time=row.create_time,
        next_attempt_time=row.next_attempt_time,
    )
