"""Live scope and live cache entry rows: the one module that creates, changes and deletes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.ids import new_id
from server.domain.live import LiveScope, LiveScopeChanges
from server.store.models import LiveEntryRow, LiveScopeRow
from server.store.upsert import insert_if_absent


async def get_scope_row(session: AsyncSession, project_id: str, slug: str) -> LiveScopeRow | None:
    """A scope of the project by slug."""
    row: LiveScopeRow | None = await session.scalar(
        select(LiveScopeRow).where(LiveScopeRow.project_id == project_id, LiveScopeRow.slug == slug)
    )
    return row


async def add_scope(
    session: AsyncSession,
    project_id: str,
    slug: str,
    *,
    allow_new_generations: bool,
    new_generations_limit: int,
    meta: dict[str, Any],
    now: datetime,
) -> LiveScopeRow | None:
    """Insert a scope unless its slug is taken (then None): concurrent first uses agree."""
    inserted = await insert_if_absent(
        session,
        LiveScopeRow.__table__,  # type: ignore[arg-type]
        {
            "id": new_id(),
            "project_id": project_id,
            "slug": slug,
            "allow_new_generations": allow_new_generations,
            "new_generations_limit": new_generations_limit,
            "meta": meta,
            "create_time": now,
            "last_generated_time": None,
        },
    )
    return await get_scope_row(session, project_id, slug) if inserted else None


def apply_changes(row: LiveScopeRow, changes: LiveScopeChanges) -> None:
    """Set the fields an UpdateLiveScope names."""
    if changes.allow_new_generations is not None:
        row.allow_new_generations = changes.allow_new_generations
    if changes.new_generations_limit is not None:
        row.new_generations_limit = changes.new_generations_limit
    if changes.meta is not None:
        row.meta = changes.meta


async def delete_scope(session: AsyncSession, row: LiveScopeRow) -> None:
    """Delete a scope row; its entries go with it (foreign key)."""
    await session.execute(delete(LiveScopeRow).where(LiveScopeRow.id == row.id))


async def list_scope_rows(
    session: AsyncSession, project_id: str, slug: str | None, limit: int, offset: int
) -> tuple[list[LiveScopeRow], int]:
    """A page of the project's scopes, newest first, and how many match."""
    where = [LiveScopeRow.project_id == project_id]
    if slug:
        where.append(LiveScopeRow.slug == slug)
    total = await session.scalar(select(func.count()).select_from(LiveScopeRow).where(*where))
    rows = await session.scalars(
        select(LiveScopeRow)
        .where(*where)
        .order_by(LiveScopeRow.create_time.desc(), LiveScopeRow.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def entry_counts(session: AsyncSession, scope_ids: Sequence[str]) -> dict[str, int]:
    """How many cache entries (generations) each scope holds."""
    if not scope_ids:
        return {}
    found = await session.execute(
        select(LiveEntryRow.scope_id, func.count())
        .where(LiveEntryRow.scope_id.in_(scope_ids))
        .group_by(LiveEntryRow.scope_id)
    )
    return {scope_id: int(count) for scope_id, count in found.all()}


def scope_from_row(row: LiveScopeRow, current_generations: int) -> LiveScope:
    """The domain LiveScope of a row."""
    return LiveScope(
        id=row.id,
        project_id=row.project_id,
        slug=row.slug,
        allow_new_generations=row.allow_new_generations,
        new_generations_limit=row.new_generations_limit,
        current_generations=current_generations,
        last_generated_time=row.last_generated_time,
        meta=dict(row.meta or {}),
        create_time=row.create_time,
    )


async def get_entry(session: AsyncSession, scope_id: str, cache_key: str) -> LiveEntryRow | None:
    """The cache entry of a key, if any."""
    row: LiveEntryRow | None = await session.get(LiveEntryRow, (scope_id, cache_key))
    return row


async def add_entry(
    session: AsyncSession, scope: LiveScopeRow, cache_key: str, generation_id: str, now: datetime
) -> bool:
    """Record that ``generation_id`` answers the key; False if another miss got there first."""
    inserted = await insert_if_absent(
        session,
        LiveEntryRow.__table__,  # type: ignore[arg-type]
        {
            "scope_id": scope.id,
            "cache_key": cache_key,
            "generation_id": generation_id,
            "create_time": now,
        },
    )
    if inserted:
        scope.last_generated_time = now
    return inserted


async def scope_generation_ids(session: AsyncSession, scope_id: str) -> list[str]:
    """The generations of a scope's entries, oldest first."""
    found = await session.scalars(
        select(LiveEntryRow.generation_id)
        .where(LiveEntryRow.scope_id == scope_id)
        .order_by(LiveEntryRow.create_time)
    )
    return list(found)
