"""Generation rows read: full domain views, lookups, listings, the work queue's depth."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import not_found
from server.domain.generations import Generation, ReferenceUse
from server.domain.lifecycle import GenerationStatus
from server.domain.paging import Cursor, PageRequest
from server.store.images import image_from_row
from server.store.models import GenerationReferenceRow, GenerationRow, ImageRow


async def generation_from_row(session: AsyncSession, row: GenerationRow) -> Generation:
    """The domain Generation of a row, with its output image and references loaded."""
    return (await generations_from_rows(session, [row]))[0]


async def generations_from_rows(
    session: AsyncSession, rows: Sequence[GenerationRow]
) -> list[Generation]:
    """Domain Generations for rows, loading images and references in one query each."""
    image_ids = [r.output_image_id for r in rows if r.output_image_id]
    images = (
        {i.id: i for i in await session.scalars(select(ImageRow).where(ImageRow.id.in_(image_ids)))}
        if image_ids
        else {}
    )
    ref_ids = [r.id for r in rows]
    refs: dict[str, list[ReferenceUse]] = {}
    if ref_ids:
        found = await session.scalars(
            select(GenerationReferenceRow)
            .where(GenerationReferenceRow.generation_id.in_(ref_ids))
            .order_by(GenerationReferenceRow.generation_id, GenerationReferenceRow.position)
        )
        for ref in found:
            refs.setdefault(ref.generation_id, []).append(ReferenceUse(ref.image_id, ref.alias))
    return [
        _generation(row, images.get(row.output_image_id or ""), refs.get(row.id, []))
        for row in rows
    ]


def _generation(row: GenerationRow, image: ImageRow | None, refs: list[ReferenceUse]) -> Generation:
    return Generation(
        id=row.id,
        project_id=row.project_id,
        flow_id=row.flow_id,
        input_prompt=row.input_prompt,
        enhanced_prompt=row.enhanced_prompt,
        auto_enhance=row.auto_enhance,
        enhancement_template=row.enhancement_template,
        aspect_ratio=row.aspect_ratio,
        status=GenerationStatus(row.status),
        output_image=image_from_row(image) if image is not None else None,
        references=tuple(refs),
        requested_references=tuple(row.requested_references or ()),
        alias=row.alias,
        flow_alias=row.flow_alias,
        meta=dict(row.meta or {}),
        error_code=row.error_code,
        error_message=row.error_message,
        processing_time_ms=row.processing_time_ms,
        run=row.run,
        attempt=row.attempt,
        revision=row.revision,
        create_time=row.create_time,
        update_time=row.update_time,
        start_time=row.start_time,
        complete_time=row.complete_time,
        model=row.model,
        requested_seed=row.seed,
        negative_prompt=row.negative_prompt,
        output_format=row.output_format,
        enhanced_by=row.enhanced_by,
        enhancement_fallback_reason=row.enhancement_fallback_reason,
        live_scope=row.live_scope,
    )


async def get_generation_row(
    session: AsyncSession, project_id: str, generation_id: str, *, for_update: bool = False
) -> GenerationRow | None:
    """A generation of the project by ID (another project's answers None, like an unknown)."""
    query = select(GenerationRow).where(
        GenerationRow.id == generation_id, GenerationRow.project_id == project_id
    )
    if for_update:
        query = query.with_for_update()
    result: GenerationRow | None = await session.scalar(query)
    return result


async def load_generation(session: AsyncSession, project_id: str, generation_id: str) -> Generation:
    """A generation of the project, or NOT_FOUND."""
    row = await get_generation_row(session, project_id, generation_id)
    if row is None:
        raise not_found("generation", generation_id)
    return await generation_from_row(session, row)


async def list_generation_rows(
    session: AsyncSession,
    project_id: str,
    page: PageRequest,
    *,
    flow_id: str | None = None,
    status: GenerationStatus | None = None,
) -> tuple[Sequence[GenerationRow], int, bool]:
    """One page, newest first: the rows, the total matching, and whether more follow."""
    conditions = [GenerationRow.project_id == project_id]
    if flow_id:
        conditions.append(GenerationRow.flow_id == flow_id)
    if status:
        conditions.append(GenerationRow.status == status.value)
    total = await session.scalar(select(func.count()).select_from(GenerationRow).where(*conditions))
    query = select(GenerationRow).where(*conditions)
    if page.after is not None:
        query = query.where(_before(page.after))
    query = query.order_by(GenerationRow.create_time.desc(), GenerationRow.id.desc())
    rows = (await session.scalars(query.offset(page.offset).limit(page.limit + 1))).all()
    return rows[: page.limit], int(total or 0), len(rows) > page.limit


def _before(cursor: Cursor) -> ColumnElement[bool]:
    return or_(
        GenerationRow.create_time < cursor.create_time,
        and_(GenerationRow.create_time == cursor.create_time, GenerationRow.id < cursor.id),
    )


def is_due(now: datetime) -> ColumnElement[bool]:
    """PENDING, or PROCESSING with an expired lease (its worker died): a worker may claim it."""
    return or_(
        GenerationRow.status == GenerationStatus.PENDING.value,
        and_(
            GenerationRow.status == GenerationStatus.PROCESSING.value,
            GenerationRow.lease_expire_time < now,
        ),
    )


async def due_count(session: AsyncSession, now: datetime) -> int:
    """How many generations wait for a worker (queue depth)."""
    count = await session.scalar(select(func.count()).select_from(GenerationRow).where(is_due(now)))
    return int(count or 0)


async def live_outputs(session: AsyncSession, image_ids: list[str]) -> set[str]:
    """Which of these images are still the output of an existing generation."""
    if not image_ids:
        return set()
    result = await session.scalars(
        select(GenerationRow.output_image_id).where(GenerationRow.output_image_id.in_(image_ids))
    )
    return {image_id for image_id in result.all() if image_id is not None}
