"""Generation rows read: full domain views, lookups, listings, the work queue's depth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from types import SimpleNamespace
from typing import Any, Final

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    func,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from server.domain.errors import not_found
from server.domain.generations import Generation, ReferenceUse
from server.domain.images import Image
from server.domain.lifecycle import GenerationStatus
from server.domain.paging import PageRequest
from server.store.db import Database
from server.store.images import image_columns, image_from_row, image_from_values
from server.store.models import UNFINISHED, GenerationReferenceRow, GenerationRow, ImageRow
from server.store.prepared import PreparedRead

_GENERATIONS: Final = GenerationRow.__table__
_IMAGES: Final = ImageRow.__table__
_REFERENCES: Final = GenerationReferenceRow.__table__


async def generation_from_row(session: AsyncSession, row: GenerationRow) -> Generation:
    """The domain Generation of a row, with its output image and references loaded."""
    return (await generations_from_rows(session, [row]))[0]


async def generations_from_rows(
    session: AsyncSession,
    rows: Sequence[GenerationRow],
    references: Mapping[str, Sequence[ReferenceUse]] | None = None,
) -> list[Generation]:
    """Domain Generations for rows, loading images and references in one query each.

    An output image this session already holds, loaded and current (one it just
    inserted or changed), is not read again; ``references``, when the caller knows
    every row's (they never change after create), are not read at all.
    """
    images: dict[str, ImageRow] = {}
    missing: list[str] = []
    for image_id in (r.output_image_id for r in rows if r.output_image_id):
        held = session.identity_map.get(identity_key(ImageRow, image_id))
        if isinstance(held, ImageRow) and not inspect(held).expired_attributes:
            images[image_id] = held
        else:
            missing.append(image_id)
    if missing:
        found_images = await session.scalars(select(ImageRow).where(ImageRow.id.in_(missing)))
        images.update({i.id: i for i in found_images})
    ref_ids = [r.id for r in rows]
    refs: dict[str, list[ReferenceUse]] = {}
    if references is not None and all(r.id in references for r in rows):
        refs = {r.id: list(references[r.id]) for r in rows}
    elif ref_ids:
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


def generation_from_values(
    values: dict[str, Any], refs: list[ReferenceUse], image: Image | ImageRow | None = None
) -> Generation:
    """The domain Generation of a row's column values (a row just inserted has no image)."""
    return _generation(SimpleNamespace(**values), image, refs)


def _generation(row: Any, image: Any, refs: list[ReferenceUse]) -> Generation:
    # ``row``: a GenerationRow or a Core row with the same column names; ``image``:
    # an ImageRow, a domain Image already built, or None.
    if isinstance(image, ImageRow):
        image = image_from_row(image)
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
        output_image=image,
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
        timeout_ms=row.timeout_ms,
        deadline_time=row.deadline_time,
        cancel_time=row.cancel_time,
        webhook_url=row.webhook_url,
        webhook_events=tuple(row.webhook_events or ()),
    )


async def get_generation_row(
    session: AsyncSession, project_id: str, generation_id: str, *, for_update: bool = False
) -> GenerationRow | None:
    """A generation of the project by ID (another project's answers None, like an unknown).

    By the primary key alone, the project compared here: see _GET."""
    query = select(GenerationRow).where(GenerationRow.id == generation_id)
    if for_update:
        query = query.with_for_update()
    row: GenerationRow | None = await session.scalar(query)
    return row if row is not None and row.project_id == project_id else None


async def load_generation(session: AsyncSession, project_id: str, generation_id: str) -> Generation:
    """A generation of the project, or NOT_FOUND."""
    row = await get_generation_row(session, project_id, generation_id)
    if row is None:
        raise not_found("generation", generation_id)
    return await generation_from_row(session, row)


# SQLite's planner, without statistics, looks the unfinished rows up by status and
# filters them all by deadline; named, the deadline index finds the overdue ones at once.
OVERDUE_INDEX_HINT: Final = "INDEXED BY ix_generations_deadline"


def is_overdue(now: datetime) -> ColumnElement[bool]:
    """Unfinished past its deadline (its timeout, queue time included): it must expire."""
    # UNFINISHED as a literal: ix_generations_deadline covers just those rows.
    return and_(text(UNFINISHED), GenerationRow.deadline_time <= now)


def first_overdue(now: datetime) -> Select[str]:
    """The id of one generation that must expire, if any."""
    return (
        select(GenerationRow.id)
        .where(is_overdue(now))
        .with_hint(_GENERATIONS, OVERDUE_INDEX_HINT, dialect_name="sqlite")
        .limit(1)
    )


async def any_overdue(session: AsyncSession, now: datetime) -> bool:
    """Whether some generation must expire (a read, so idle replicas take no write lock)."""
    return await session.scalar(first_overdue(now)) is not None


def is_due(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """PENDING, or PROCESSING with an expired lease (its worker died): a worker may claim it.

    On the table's columns, not the mapped class's: a Core statement that uses it (the
    engine's claim) stays Core rather than becoming an ORM-enabled one.
    """
    columns = _GENERATIONS.c
    return or_(
        columns.status == GenerationStatus.PENDING.value,
        and_(
            columns.status == GenerationStatus.PROCESSING.value,
            columns.lease_expire_time < now,
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


# --- the read path of Get and List: one statement, one round trip --------------------
#
# Core, not the ORM: a read builds no identity map, no instrumented objects and no
# second and third query for the output image and the references. The generation's
# columns come under their own names, the output image's with IMAGE_PREFIX, and each
# reference adds a row (ordered by position), folded back into one Generation here.


def _with_image_and_references(generations: Any) -> Select[Any]:
    """Every column of ``generations`` (a table or subquery), its image, its references."""
    return select(
        generations,
        *image_columns(_IMAGES),
        _REFERENCES.c.image_id.label("ref_image_id"),
        _REFERENCES.c.alias.label("ref_alias"),
        _REFERENCES.c.position.label("ref_position"),
    ).select_from(
        generations.outerjoin(_IMAGES, _IMAGES.c.id == generations.c.output_image_id).outerjoin(
            _REFERENCES, _REFERENCES.c.generation_id == generations.c.id
        )
    )


# Built once: SQLAlchemy caches its compiled form, and each call only binds values.
# The hottest read of the API: compiled once, run on the driver (server/store/prepared.py).
# No ORDER BY: _fold puts the references in order. On PostgreSQL the Sort node (even
# of one row) made the read cost the database 30-44 us of CPU instead of 23-25.
# By id alone, the project compared in fetch_generation: with both in the WHERE clause,
# PostgreSQL's generic plan for a statement prepared while the table had no statistics
# (a new deployment's first minutes) used the (project_id, create_time) index and read
# every generation of the project per Get: 0.1 ms of its CPU at 32 rows, 1.1 ms at 32,000.
_GET: Final = PreparedRead(
    _with_image_and_references(_GENERATIONS).where(_GENERATIONS.c.id == bindparam("generation_id"))
)


def _fold(rows: Sequence[Row[Any]]) -> list[Generation]:
    """Generations from joined rows (one per reference, or one without), in row order;
    each one's references in their order (``position``), whatever the rows' order."""
    found: dict[str, tuple[Row[Any], list[tuple[int, ReferenceUse]]]] = {}
    for row in rows:
        entry = found.get(row.id)
        if entry is None:
            entry = found[row.id] = (row, [])
        if row.ref_image_id is not None:
            entry[1].append((row.ref_position, ReferenceUse(row.ref_image_id, row.ref_alias)))
    return [
        _generation(
            row,
            image_from_values(row._mapping) if row.output_image_id is not None else None,
            [use for _, use in sorted(refs, key=itemgetter(0))],
        )
        for row, refs in found.values()
    ]


async def fetch_generation(db: Database, project_id: str, generation_id: str) -> Generation:
    """A generation of the project with its image and references (one query), or NOT_FOUND."""
    rows = await db.fetch_prepared(_GET, {"generation_id": generation_id})
    generation = _fold(rows)[0] if rows else None
    if generation is None or generation.project_id != project_id:
        # Another project's generation is as absent to this caller as a missing one.
        raise not_found("generation", generation_id)
    return generation


def _page_statements(
    by_flow: bool, by_status: bool, after_cursor: bool
) -> tuple[Select[Any], Select[Any]]:
    """One kind of page (which filters, whether after a cursor): the page with the total
    matching, and the total alone (for an empty page, which has no row to carry it)."""
    columns = _GENERATIONS.c
    conditions = [columns.project_id == bindparam("b_project")]
    if by_flow:
        conditions.append(columns.flow_id == bindparam("b_flow"))
    if by_status:
        conditions.append(columns.status == bindparam("b_status"))
    count = select(func.count()).select_from(_GENERATIONS).where(*conditions)
    query = select(_GENERATIONS, count.scalar_subquery().label("total_matching")).where(*conditions)
    if after_cursor:
        # Keyset paging: the rows after the cursor's, newest first.
        after_time = bindparam("b_after_time", type_=columns.create_time.type)
        query = query.where(
            or_(
                columns.create_time < after_time,
                and_(columns.create_time == after_time, columns.id < bindparam("b_after_id")),
            )
        )
    window = (
        query.order_by(columns.create_time.desc(), columns.id.desc())
        .offset(bindparam("b_offset"))
        .limit(bindparam("b_limit"))
        .subquery("page")
    )
    page = _with_image_and_references(window).order_by(
        window.c.create_time.desc(), window.c.id.desc()
    )
    return page, count


# Built once per kind: building one costs more CPU than running it (a subquery's column
# collections are made anew each time), and a built statement keeps its cache key.
_PAGES: Final = {
    (by_flow, by_status, after_cursor): _page_statements(by_flow, by_status, after_cursor)
    for by_flow in (False, True)
    for by_status in (False, True)
    for after_cursor in (False, True)
}


async def fetch_generation_page(
    db: Database,
    project_id: str,
    page: PageRequest,
    *,
    flow_id: str | None = None,
    status: GenerationStatus | None = None,
) -> tuple[list[Generation], int, bool]:
    """One page, newest first, with the total matching and whether more follow.

    One query: the page is a subquery carrying the total as a scalar subquery,
    joined to images and references. Only an empty page asks a second time, for
    the total (it has no row to carry it).
    """
    statement, count = _PAGES[bool(flow_id), bool(status), page.after is not None]
    params: dict[str, Any] = {
        "b_project": project_id,
        "b_flow": flow_id,
        "b_status": status.value if status else None,
        "b_offset": page.offset,
        "b_limit": page.limit + 1,
    }
    if page.after is not None:
        params.update(b_after_time=page.after.create_time, b_after_id=page.after.id)
    rows = await db.fetch(statement, params)
    generations = _fold(rows)
    if rows:
        matching = int(rows[0].total_matching)
    else:
        (counted,) = await db.fetch(count, params)
        matching = int(counted[0])
    return generations[: page.limit], matching, len(generations) > page.limit
