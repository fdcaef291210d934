"""Flow rows: created on first use, touched, deleted; looked up and listed with their counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import not_found
from server.domain.fields import FlowChoice, FlowMode
from server.domain.flows import Flow
from server.domain.ids import new_id
from server.domain.paging import PageRequest
from server.store.fast_insert import insert_rows
from server.store.models import FlowAliasRow, FlowRow, GenerationRow, ImageRow
from server.store.upsert import insert_if_absent


async def ensure_flow(
    session: AsyncSession, project_id: str, choice: FlowChoice, now: datetime
) -> str | None:
    """The flow ID a request's flow choice stands for, creating the flow if needed."""
    if choice.mode is FlowMode.NONE:
        return None
    table = FlowRow.__table__
    if choice.mode is FlowMode.NEW:
        # A new ID cannot be taken: insert it, nothing to check or read back.
        minted = new_id()
        await insert_rows(
            session,
            cast(Table, table),
            [{"id": minted, "project_id": project_id, "create_time": now, "update_time": now}],
        )
        return minted
    flow_id = choice.flow_id
    assert flow_id is not None
    await insert_if_absent(
        session,
        table,  # type: ignore[arg-type]
        {"id": flow_id, "project_id": project_id, "create_time": now, "update_time": now},
    )
    row = await session.get(FlowRow, flow_id)
    if row is None or row.project_id != project_id:
        # Another project's flow: indistinguishable from a missing one for this caller.
        raise not_found("flow", flow_id)
    row.update_time = now
    return flow_id


def touch_flow(row: FlowRow, now: datetime) -> None:
    """Record that the flow changed (its alias map)."""
    row.update_time = now


async def delete_flow(session: AsyncSession, flow_id: str) -> None:
    """Delete a flow row; generations still in it are unlinked by the foreign key (SET NULL)."""
    await session.execute(delete(FlowRow).where(FlowRow.id == flow_id))


async def get_flow_row(
    session: AsyncSession, project_id: str, flow_id: str, *, for_update: bool = False
) -> FlowRow | None:
    """A flow of the project by ID (another project's answers None, like an unknown).

    By the primary key alone, the project compared here: with both in the WHERE clause,
    PostgreSQL's cached generic plan could walk (project_id, create_time) instead
    (server/store/generation_queries.py, _GET)."""
    query = select(FlowRow).where(FlowRow.id == flow_id)
    if for_update:
        query = query.with_for_update()
    row: FlowRow | None = await session.scalar(query)
    return row if row is not None and row.project_id == project_id else None


async def flows_from_rows(session: AsyncSession, rows: Sequence[FlowRow]) -> list[Flow]:
    """The domain Flows of rows, with counts and alias maps loaded in three queries."""
    ids = [row.id for row in rows]
    if not ids:
        return []
    generation_counts: dict[str | None, int] = {
        flow_id: count
        for flow_id, count in await session.execute(
            select(GenerationRow.flow_id, func.count())
            .where(GenerationRow.flow_id.in_(ids))
            .group_by(GenerationRow.flow_id)
        )
    }
    image_counts: dict[str | None, int] = {
        flow_id: count
        for flow_id, count in await session.execute(
            select(ImageRow.flow_id, func.count())
            .where(ImageRow.flow_id.in_(ids))
            .group_by(ImageRow.flow_id)
        )
    }
    aliases: dict[str, dict[str, str]] = {flow_id: {} for flow_id in ids}
    for entry in await session.scalars(
        select(FlowAliasRow).where(FlowAliasRow.flow_id.in_(ids)).order_by(FlowAliasRow.alias)
    ):
        aliases[entry.flow_id][entry.alias] = entry.image_id
    return [
        Flow(
            id=row.id,
            project_id=row.project_id,
            aliases=aliases[row.id],
            generation_count=int(generation_counts.get(row.id, 0)),
            image_count=int(image_counts.get(row.id, 0)),
            create_time=row.create_time,
            update_time=row.update_time,
        )
        for row in rows
    ]


async def list_flow_rows(
    session: AsyncSession, project_id: str, page: PageRequest
) -> tuple[Sequence[FlowRow], int, bool]:
    """One page of the project's flows, newest first: rows, total, and whether more follow."""
    condition = FlowRow.project_id == project_id
    total = await session.scalar(select(func.count()).select_from(FlowRow).where(condition))
    query = select(FlowRow).where(condition)
    if page.after is not None:
        query = query.where(
            or_(
                FlowRow.create_time < page.after.create_time,
                and_(FlowRow.create_time == page.after.create_time, FlowRow.id < page.after.id),
            )
        )
    query = query.order_by(FlowRow.create_time.desc(), FlowRow.id.desc())
    rows = (await session.scalars(query.offset(page.offset).limit(page.limit + 1))).all()
    return rows[: page.limit], int(total or 0), len(rows) > page.limit


async def latest_generation_id(session: AsyncSession, project_id: str, flow_id: str) -> str | None:
    """The ID of the flow's most recently created generation, if it has any."""
    result: str | None = await session.scalar(
        select(GenerationRow.id)
        .where(GenerationRow.project_id == project_id, GenerationRow.flow_id == flow_id)
        .order_by(GenerationRow.create_time.desc(), GenerationRow.id.desc())
        .limit(1)
    )
    return result


async def generation_ids_of_flow(session: AsyncSession, project_id: str, flow_id: str) -> list[str]:
    """The IDs of every generation of a flow."""
    result = await session.scalars(
        select(GenerationRow.id).where(
            GenerationRow.project_id == project_id, GenerationRow.flow_id == flow_id
        )
    )
    return list(result.all())
