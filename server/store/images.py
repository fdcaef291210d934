"""Image rows: mapping to the domain, listing, and alias resolution (technical → flow → project)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.images import Image, ImageSource
from server.domain.paging import PageRequest
from server.store.models import FlowAliasRow, ImageRow


def image_from_row(row: ImageRow) -> Image:
    """The domain Image of a row."""
    focal = (
        (row.focal_x, row.focal_y) if row.focal_x is not None and row.focal_y is not None else None
    )
    return Image(
        id=row.id,
        project_id=row.project_id,
        flow_id=row.flow_id,
        generation_id=row.generation_id,
        source=ImageSource(row.source),
        alias=row.alias,
        mime_type=row.mime_type,
        file_size=row.file_size,
        width=row.width,
        height=row.height,
        focal_point=focal,
        meta=dict(row.meta or {}),
        object_key=row.object_key,
        etag=row.etag,
        create_time=row.create_time,
        update_time=row.update_time,
    )


async def get_image_row(session: AsyncSession, project_id: str, image_id: str) -> ImageRow | None:
    """An image of the project by ID."""
    row = await session.get(ImageRow, image_id)
    return row if row is not None and row.project_id == project_id else None


async def resolve_alias_row(
    session: AsyncSession, project_id: str, alias: str, flow_id: str | None
) -> tuple[ImageRow, str] | None:
    """The image an alias names and its scope ("technical", "flow", "project"), or None."""
    if flow_id:
        technical = await _technical(session, project_id, alias, flow_id)
        if technical is not None:
            return technical, "technical"
        if alias in ("@last", "@first", "@upload"):
            return None
        flow_row = await session.scalar(
            select(ImageRow)
            .join(FlowAliasRow, FlowAliasRow.image_id == ImageRow.id)
            .where(FlowAliasRow.flow_id == flow_id, FlowAliasRow.alias == alias)
            .where(ImageRow.project_id == project_id)
        )
        if flow_row is not None:
            return flow_row, "flow"
    project_row = await session.scalar(
        select(ImageRow).where(ImageRow.project_id == project_id, ImageRow.alias == alias)
    )
    return (project_row, "project") if project_row is not None else None


async def _technical(
    session: AsyncSession, project_id: str, alias: str, flow_id: str
) -> ImageRow | None:
    query = select(ImageRow).where(ImageRow.project_id == project_id, ImageRow.flow_id == flow_id)
    if alias == "@last":
        query = query.where(ImageRow.source == ImageSource.GENERATED.value).order_by(
            ImageRow.create_time.desc(), ImageRow.id.desc()
        )
    elif alias == "@first":
        query = query.where(ImageRow.source == ImageSource.GENERATED.value).order_by(
            ImageRow.create_time, ImageRow.id
        )
    elif alias == "@upload":
        query = query.where(ImageRow.source == ImageSource.UPLOADED.value).order_by(
            ImageRow.create_time.desc(), ImageRow.id.desc()
        )
    else:
        return None
    return await session.scalar(query.limit(1))


async def list_image_rows(
    session: AsyncSession,
    project_id: str,
    page: PageRequest,
    *,
    flow_id: str | None = None,
    source: ImageSource | None = None,
    alias: str | None = None,
) -> tuple[Sequence[ImageRow], int, bool]:
    """One page, newest first: the rows, the total matching, and whether more follow."""
    conditions = [ImageRow.project_id == project_id]
    if flow_id:
        conditions.append(ImageRow.flow_id == flow_id)
    if source:
        conditions.append(ImageRow.source == source.value)
    if alias:
        conditions.append(ImageRow.alias == alias)
    total = await session.scalar(select(func.count()).select_from(ImageRow).where(*conditions))
    query = select(ImageRow).where(*conditions)
    if page.after is not None:
        query = query.where(
            or_(
                ImageRow.create_time < page.after.create_time,
                and_(
                    ImageRow.create_time == page.after.create_time,
                    ImageRow.id < page.after.id,
                ),
            )
        )
    query = query.order_by(ImageRow.create_time.desc(), ImageRow.id.desc())
    rows = (await session.scalars(query.offset(page.offset).limit(page.limit + 1))).all()
    return rows[: page.limit], int(total or 0), len(rows) > page.limit


async def image_rows_of_flow(
    session: AsyncSession, project_id: str, flow_id: str
) -> list[ImageRow]:
    """Every image of a flow (for deleting the flow)."""
    result = await session.scalars(
        select(ImageRow).where(ImageRow.project_id == project_id, ImageRow.flow_id == flow_id)
    )
    return list(result.all())
