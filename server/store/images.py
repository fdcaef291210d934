"""Image rows: the one place they are built and changed; lookups, listings, alias resolution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.aliases import TECHNICAL_ALIASES
from server.domain.images import Image, ImageSource, StoredContent, UpdateImage
from server.domain.paging import PageRequest
from server.store import fast_insert
from server.store.models import FlowAliasRow, ImageRow

_IMAGES: Final = cast(Table, ImageRow.__table__)
_INSERT: Final = insert(_IMAGES)

# Where a joined read puts an image's columns: under this prefix, beside another table's.
IMAGE_PREFIX: Final = "img_"


def image_columns(images: Any) -> list[Any]:
    """The image table's columns labelled with IMAGE_PREFIX (for a joined read)."""
    return [column.label(IMAGE_PREFIX + column.name) for column in images.c]


def image_from_values(values: Mapping[Any, Any], prefix: str = IMAGE_PREFIX) -> Image:
    """The domain Image of a joined row's columns (named ``prefix`` + column name)."""
    focal_x, focal_y = values[prefix + "focal_x"], values[prefix + "focal_y"]
    return Image(
        id=values[prefix + "id"],
        project_id=values[prefix + "project_id"],
        flow_id=values[prefix + "flow_id"],
        generation_id=values[prefix + "generation_id"],
        source=ImageSource(values[prefix + "source"]),
        alias=values[prefix + "alias"],
        mime_type=values[prefix + "mime_type"],
        file_size=values[prefix + "file_size"],
        width=values[prefix + "width"],
        height=values[prefix + "height"],
        focal_point=(focal_x, focal_y) if focal_x is not None and focal_y is not None else None,
        meta=dict(values[prefix + "meta"] or {}),
        object_key=values[prefix + "object_key"],
        etag=values[prefix + "etag"],
        create_time=values[prefix + "create_time"],
        update_time=values[prefix + "update_time"],
    )


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
        if alias in TECHNICAL_ALIASES:
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


async def image_rows_by_id(session: AsyncSession, image_ids: Sequence[str]) -> list[ImageRow]:
    """The rows of these images that still exist, in the order asked."""
    rows = [await session.get(ImageRow, image_id) for image_id in image_ids]
    return [row for row in rows if row is not None]


# --- changes: every write to an image row is one of these ---


@dataclass(frozen=True, slots=True)
class NewImage:
    """An image row about to be inserted: its column values and its domain Image."""

    values: dict[str, Any]
    image: Image

    @classmethod
    def of(
        cls,
        *,
        image_id: str,
        project_id: str,
        flow_id: str | None,
        generation_id: str | None,
        source: ImageSource,
        content: StoredContent,
        meta: dict[str, Any],
        now: datetime,
    ) -> NewImage:
        """Version 1 of ``content``, no project alias yet (as ``add_image`` writes it)."""
        values: dict[str, Any] = {
            "id": image_id,
            "project_id": project_id,
            "flow_id": flow_id,
            "generation_id": generation_id,
            "source": source.value,
            "alias": None,
            "mime_type": content.mime_type,
            "file_size": content.file_size,
            "width": content.width,
            "height": content.height,
            "focal_x": None,
            "focal_y": None,
            "meta": meta,
            "object_key": content.object_key,
            "version": 1,
            "etag": content.etag,
            "create_time": now,
            "update_time": now,
        }
        return cls(values, image_from_values(values, prefix=""))


async def insert_images(session: AsyncSession, new: Sequence[NewImage]) -> None:
    """Insert new image rows in one Core executemany statement (a worker's finishes):
    no unit of work and no flush; nothing for none."""
    await fast_insert.execute_many(session, _INSERT, [image.values for image in new])


async def add_image(session: AsyncSession, new: NewImage) -> ImageRow:
    """Insert a new image (version 1 of its bytes, no project alias yet) as an ORM row,
    for callers that go on to change it (an alias); ``insert_images`` writes many."""
    row = ImageRow(**new.values)
    session.add(row)
    await session.flush()
    return row


def replace_content(
    row: ImageRow, content: StoredContent, flow_id: str | None, now: datetime
) -> None:
    """Point an image at a new version of its bytes (a generation's new run)."""
    row.object_key = content.object_key
    row.version += 1
    row.mime_type = content.mime_type
    row.file_size = content.file_size
    row.width = content.width
    row.height = content.height
    row.etag = content.etag
    row.flow_id = flow_id
    row.update_time = now


def apply_update(row: ImageRow, command: UpdateImage, now: datetime) -> None:
    """Change the focal point and/or the metadata (the fields in ``command.changed``)."""
    if "focal_point" in command.changed:
        row.focal_x, row.focal_y = command.focal_point or (None, None)
    if "meta" in command.changed:
        row.meta = command.meta or {}
    row.update_time = now


def follow_generation(row: ImageRow, flow_id: str | None) -> None:
    """An output image belongs to its generation's flow: move it along."""
    row.flow_id = flow_id


def unlink_from_flow(rows: Sequence[ImageRow], now: datetime) -> None:
    """Images that outlive their flow (being deleted) stay, without a flow."""
    for row in rows:
        row.flow_id = None
        row.update_time = now


def unlink_from_generation(row: ImageRow) -> None:
    """An output image that outlives its generation (it holds a project alias)."""
    row.generation_id = None


async def delete_image_rows(session: AsyncSession, rows: Sequence[ImageRow]) -> None:
    """Delete image rows; flow alias entries and recorded references go by foreign key."""
    for row in rows:
        await session.delete(row)
    await session.flush()
