"""Reads of the outbox (generation_events) for watchers; store.generations writes it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from server.store.models import EventHorizonRow, GenerationEventRow

# Bound on the ids of one IN (...) list (SQLite allows 32,766 parameters; stay far below).
IDS_PER_QUERY = 500


async def latest_event(session: AsyncSession, generation_id: str) -> GenerationEventRow | None:
    """The generation's newest outbox row (its current state), if it ever existed."""
    row: GenerationEventRow | None = await session.scalar(
        select(GenerationEventRow)
        .where(GenerationEventRow.generation_id == generation_id)
        .order_by(GenerationEventRow.revision.desc())
        .limit(1)
    )
    return row


async def events_after(
    session: AsyncSession, generation_id: str, revision: int
) -> Sequence[GenerationEventRow]:
    """The generation's rows after ``revision``, oldest first."""
    result = await session.scalars(
        select(GenerationEventRow)
        .where(
            GenerationEventRow.generation_id == generation_id,
            GenerationEventRow.revision > revision,
        )
        .order_by(GenerationEventRow.revision)
    )
    return result.all()


async def project_head(session: AsyncSession, project_id: str) -> int:
    """The project's highest outbox sequence number (0 when it has none)."""
    head = await session.scalar(
        select(func.coalesce(func.max(GenerationEventRow.seq), 0)).where(
            GenerationEventRow.project_id == project_id
        )
    )
    return int(head or 0)


async def project_events_after(
    session: AsyncSession, project_id: str, seq: int, limit: int
) -> Sequence[GenerationEventRow]:
    """Up to ``limit`` of the project's rows after sequence number ``seq``, in order.

    Within a project, rows commit in sequence order (record_event takes a
    per-project lock on PostgreSQL), so a reader that resumes after the last
    sequence number it saw never skips a row.
    """
    result = await session.scalars(
        select(GenerationEventRow)
        .where(GenerationEventRow.project_id == project_id, GenerationEventRow.seq > seq)
        .order_by(GenerationEventRow.seq)
        .limit(limit)
    )
    return result.all()


async def pruned_through(session: AsyncSession, project_id: str) -> int:
    """The highest sequence number of the project that retention deleted (0: none yet)."""
    seq = await session.scalar(
        select(EventHorizonRow.pruned_seq).where(EventHorizonRow.project_id == project_id)
    )
    return int(seq or 0)


async def project_present_after(
    session: AsyncSession, project_id: str, seq: int, limit: int
) -> Sequence[GenerationEventRow]:
    """Up to ``limit`` rows after ``seq`` that are their generation's latest, in order:
    the present state of every generation of the project that changed since ``seq``."""
    newer = aliased(GenerationEventRow)
    result = await session.scalars(
        select(GenerationEventRow)
        .where(
            GenerationEventRow.project_id == project_id,
            GenerationEventRow.seq > seq,
            ~select(newer.seq)
            .where(
                newer.generation_id == GenerationEventRow.generation_id,
                newer.revision > GenerationEventRow.revision,
            )
            .exists(),
        )
        .order_by(GenerationEventRow.seq)
        .limit(limit)
    )
    return result.all()


async def heads(
    session: AsyncSession, generation_ids: Iterable[str], project_ids: Iterable[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """The newest revision of each generation and the highest sequence number of each project."""
    revisions: dict[str, int] = {}
    for chunk in _chunks(list(generation_ids)):
        rows = await session.execute(
            select(GenerationEventRow.generation_id, func.max(GenerationEventRow.revision))
            .where(GenerationEventRow.generation_id.in_(chunk))
            .group_by(GenerationEventRow.generation_id)
        )
        revisions.update({generation_id: int(head) for generation_id, head in rows.all()})
    sequences: dict[str, int] = {}
    for chunk in _chunks(list(project_ids)):
        rows = await session.execute(
            select(GenerationEventRow.project_id, func.max(GenerationEventRow.seq))
            .where(GenerationEventRow.project_id.in_(chunk))
            .group_by(GenerationEventRow.project_id)
        )
        sequences.update({project_id: int(head) for project_id, head in rows.all()})
    return revisions, sequences


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), IDS_PER_QUERY):
        yield ids[start : start + IDS_PER_QUERY]
