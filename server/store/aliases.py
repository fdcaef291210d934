"""The one place aliases are assigned, moved and released: project aliases and flow alias maps."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import FlowAliasRow, ImageRow


async def project_alias_holder(
    session: AsyncSession, project_id: str, alias: str
) -> ImageRow | None:
    """The image of the project holding ``alias``, if any."""
    result: ImageRow | None = await session.scalar(
        select(ImageRow).where(ImageRow.project_id == project_id, ImageRow.alias == alias)
    )
    return result


async def move_project_alias(
    session: AsyncSession, row: ImageRow, alias: str | None, now: datetime
) -> None:
    """Give ``row`` the project alias ``alias`` (None clears it), taking it off any other holder."""
    if alias:
        await session.execute(
            update(ImageRow)
            .where(
                ImageRow.project_id == row.project_id,
                ImageRow.alias == alias,
                ImageRow.id != row.id,
            )
            .values(alias=None, update_time=now)
        )
        await session.flush()
    row.alias = alias
    row.update_time = now
    await session.flush()


async def set_flow_alias(session: AsyncSession, flow_id: str, alias: str, image_id: str) -> None:
    """Point a flow's ``alias`` at ``image_id`` (a new entry, or a repointed one)."""
    await session.merge(FlowAliasRow(flow_id=flow_id, alias=alias, image_id=image_id))


async def remove_flow_alias(session: AsyncSession, flow_id: str, alias: str) -> bool:
    """Remove one entry of a flow's alias map; False if it had no such alias."""
    result = await session.execute(
        delete(FlowAliasRow).where(FlowAliasRow.flow_id == flow_id, FlowAliasRow.alias == alias)
    )
    return bool(getattr(result, "rowcount", 0))
