"""The one owner of generation rows: create, claim, finish, rerun, touch, delete — each with its
outbox event, and every status change through the state machine in ``domain.lifecycle``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    String,
    Table,
    Update,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy import delete as delete_rows
from sqlalchemy import insert as insert_rows
from sqlalchemy import update as update_rows
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.expression import Grouping

from server.domain.errors import not_found
from server.domain.generations import (
    CreateGeneration,
    EventType,
    Generation,
    ReferenceUse,
    UpdateGeneration,
    to_snapshot,
)
from server.domain.ids import new_id
from server.domain.images import Image, ImageSource, StoredContent
from server.domain.lifecycle import DEADLINE_EXCEEDED, MOVES, GenerationStatus, Move, advance
from server.domain.models import ModelRef
from server.domain.webhooks import event_for
from server.store import aliases, fast_insert, images, webhooks
from server.store.flows import ensure_flow
from server.store.generation_queries import (
    OVERDUE_INDEX_HINT,
    generation_from_row,
    generation_from_values,
    generations_from_rows,
    get_generation_row,
    is_due,
    is_overdue,
)
from server.store.images import image_from_values
from server.store.models import (
    CLAIM_ORDER,
    UNFINISHED,
    EventHorizonRow,
    FlowRow,
    GenerationEventRow,
    GenerationReferenceRow,
    GenerationRow,
    ImageRow,
)
from server.store.upsert import raise_to

EVENTS_CHANNEL = "imagegen_events"

# Inserts name the tables, not the mapped classes: an ORM-enabled insert goes through
# the bulk-persistence machinery, which costs more than the statement for one row.
_GENERATIONS = cast(Table, GenerationRow.__table__)
_REFERENCES = cast(Table, GenerationReferenceRow.__table__)
_IMAGES = cast(Table, ImageRow.__table__)
_EVENTS = cast(Table, GenerationEventRow.__table__)
_HORIZONS = cast(Table, EventHorizonRow.__table__)
_FLOWS = cast(Table, FlowRow.__table__)

# What a new run starts without: the results of the last run, and the lease of its worker.
_RUN_RESULTS = (
    GenerationRow.enhanced_prompt,
    GenerationRow.enhanced_by,
    GenerationRow.enhancement_fallback_reason,
    GenerationRow.error_code,
    GenerationRow.error_message,
    GenerationRow.processing_time_ms,
    GenerationRow.start_time,
    GenerationRow.complete_time,
    GenerationRow.cancel_time,
)
_LEASE = (GenerationRow.lease_token, GenerationRow.lease_expire_time)


@dataclass(frozen=True, slots=True)
class Claim:
    """A generation a worker now holds, and the token that proves it."""

    generation: Generation
    token: str


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: the stored output, or an error code and message.

    ``enhanced_by`` names the enhancer that wrote ``enhanced_prompt``;
    ``enhancement_fallback_reason`` says why an LLM enhancer was replaced by the template one.
    """

    enhanced_prompt: str | None
    elapsed_ms: int
    output: StoredContent | None = None
    error_code: str | None = None
    error_message: str | None = None
    enhanced_by: str | None = None
    enhancement_fallback_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Removed:
    """What deleting a generation did: its last state, and what became of its output image."""

    generation: Generation
    image_deleted: bool
    kept_key: str | None


async def create(
    session: AsyncSession,
    *,
    generation_id: str,
    project_id: str,
    flow_id: str | None,
    command: CreateGeneration,
    model: ModelRef,
    uses: Sequence[ReferenceUse],
    now: datetime,
    live_scope: str | None = None,
) -> Generation:
    """Insert a PENDING generation with its resolved references (revision 1).

    ``model`` is the one it runs with: the command's, or the deployment default.
    Core inserts and a Generation built from the values written: a new row has no
    output image and its references are ``uses``, so nothing needs reading back.
    """
    values: dict[str, Any] = {
        "id": generation_id,
        "project_id": project_id,
        "flow_id": flow_id,
        "input_prompt": command.prompt,
        "enhanced_prompt": None,
        "auto_enhance": command.auto_enhance,
        "enhancement_template": command.enhancement_template,
        "aspect_ratio": command.aspect_ratio,
        "status": GenerationStatus.PENDING.value,
        "output_image_id": None,
        "requested_references": list(command.references),
        "alias": command.alias,
        "flow_alias": command.flow_alias,
        "meta": command.meta,
        "error_code": None,
        "error_message": None,
        "processing_time_ms": None,
        "run": 1,
        "attempt": 0,
        "revision": 1,
        "lease_token": None,
        "lease_expire_time": None,
        "create_time": now,
        "update_time": now,
        "start_time": None,
        "complete_time": None,
        "model": str(model),
        "seed": command.seed,
        "negative_prompt": command.negative_prompt,
        "output_format": command.output_format,
        "enhanced_by": None,
        "enhancement_fallback_reason": None,
        "live_scope": live_scope,
        "timeout_ms": command.timeout_ms,
        "deadline_time": _deadline(command.timeout_ms, now),
        "cancel_time": None,
        "webhook_url": command.webhook.url if command.webhook else None,
        "webhook_events": list(command.webhook.events) if command.webhook else None,
    }
    await fast_insert.insert_rows(session, _GENERATIONS, [values])
    if uses:
        # After the generation row: the references point at it.
        await fast_insert.insert_rows(
            session,
            _REFERENCES,
            [
                {
                    "generation_id": generation_id,
                    "position": position,
                    "image_id": use.image_id,
                    "alias": use.alias,
                }
                for position, use in enumerate(uses)
            ],
        )
    generation = generation_from_values(values, list(uses))
    await _record_event(session, generation, EventType.CREATED, now)
    return generation


async def lock(session: AsyncSession, project_id: str, generation_id: str) -> GenerationRow:
    """The generation row, locked for a change in this transaction; NOT_FOUND if absent."""
    row = await get_generation_row(session, project_id, generation_id, for_update=True)
    if row is None:
        raise not_found("generation", generation_id)
    return row


# --- the worker's side: claim, renew, release, finish ---


async def claim_next(
    session: AsyncSession, now: datetime, lease: timedelta, token: str, *, skip_locked: bool
) -> Claim | None:
    """Claim the longest-waiting due generation under ``token`` (see claim_due), or None."""
    claims = await claim_due(session, now, lease, [token], skip_locked=skip_locked)
    return claims[0] if claims else None


async def claim_due(
    session: AsyncSession,
    now: datetime,
    lease: timedelta,
    tokens: Sequence[str],
    *,
    skip_locked: bool,
) -> list[Claim]:
    """Mark up to ``len(tokens)`` of the longest-waiting due generations PROCESSING, one
    token each.

    Due means PENDING, or PROCESSING with an expired lease (its worker died, or it was
    handed back to be retried). A generation waits from its creation, or, handed back,
    from its retry time: a retried one queues behind those that waited longer instead of
    going first by its age (a handful of retried ones would hold every worker while a
    dependency is down, and the rest would never be tried).
    One transaction claims a batch: on PostgreSQL, SKIP LOCKED lets many
    replicas claim side by side without waiting on each other's rows; on
    SQLite the writer lock already makes the claim exclusive.

    Core statements, no ORM objects: on PostgreSQL one UPDATE that locks, changes and
    returns the batch; on SQLite a read of the batch and an executemany update; then
    one read of their output images and references (when any can exist), then each
    claim's webhook delivery and outbox event.
    """
    if not tokens:
        return []
    claimed = (
        await _claim_in_one_statement(session, now, lease, tokens)
        if skip_locked
        else await _claim_read_then_update(session, now, lease, tokens)
    )
    if not claimed:
        return []
    image_ids = [values["output_image_id"] for values, _, _ in claimed]
    output_images = await _images_by_id(session, [i for i in image_ids if i is not None])
    references = await _references_of(session, [values for values, _, _ in claimed])
    claims = [
        Claim(
            generation_from_values(
                values,
                references.get(values["id"], []),
                output_images.get(values["output_image_id"] or ""),
            ),
            token,
        )
        for values, token, _ in claimed
    ]
    await _record_changes(
        session,
        [(claim.generation, moved) for claim, (_, _, moved) in zip(claims, claimed, strict=True)],
        now,
    )
    return claims


async def _claim_read_then_update(
    session: AsyncSession, now: datetime, lease: timedelta, tokens: Sequence[str]
) -> list[tuple[dict[str, Any], str, bool]]:
    """The claimed rows' values, each token, and whether it moved (SQLite: the writer lock
    keeps the batch's rows apart from other claims between the read and the update)."""
    rows = (await session.execute(_CLAIMABLE.limit(len(tokens)), {"b_now": now})).all()
    claimed: list[tuple[dict[str, Any], str, bool]] = []
    for row, token in zip(rows, tokens, strict=False):
        values = dict(row._mapping)
        before = GenerationStatus(values["status"])
        values.update(
            status=advance(before, Move.CLAIM).value,
            complete_time=None,
            error_code=None,
            error_message=None,
            lease_token=token,
            lease_expire_time=now + lease,
            attempt=values["attempt"] + 1,
            start_time=now,
            revision=values["revision"] + 1,
            update_time=now,
        )
        claimed.append(_claimed(values, token, before))
    if claimed:
        changes = [{"b_id": values["id"], **_claimed_fields(values)} for values, _, _ in claimed]
        await fast_insert.execute_many(session, _CLAIM_UPDATE, changes)
    return claimed


async def _claim_in_one_statement(
    session: AsyncSession, now: datetime, lease: timedelta, tokens: Sequence[str]
) -> list[tuple[dict[str, Any], str, bool]]:
    """``_claim_read_then_update`` on PostgreSQL: one UPDATE that locks the batch (SKIP
    LOCKED), sets it and returns it, a round trip less than a read and an update."""
    result = await session.execute(
        _CLAIM_POSTGRESQL,
        {
            "b_now": now,
            "b_count": len(tokens),
            "b_tokens": list(tokens),
            "b_lease_expire_time": now + lease,
        },
    )
    claimed: list[tuple[dict[str, Any], str, bool]] = []
    # In queue order: the runs start oldest first.
    for row in sorted(result.all(), key=lambda row: int(row.claim_position)):
        values = dict(row._mapping)
        before = GenerationStatus(values.pop("claimed_from"))
        del values["claim_position"]
        claimed.append(_claimed(values, values["lease_token"], before))
    return claimed


def _claimed(
    values: dict[str, Any], token: str, before: GenerationStatus
) -> tuple[dict[str, Any], str, bool]:
    """A claimed row's values, its token, and whether it moved: a re-claim (its worker
    died) is no new "processing" event."""
    return values, token, before is not GenerationStatus.PROCESSING


# The due generations, oldest first (Core: ``is_due`` is on the table's columns); an
# overdue generation is expired, never started.
_G = _GENERATIONS.c
# SQLite's planner, without statistics, prefers the two status lookups of
# ix_generations_due and a sort of everything they find.
_CLAIM_INDEX_HINT: Final = "INDEXED BY ix_generations_claim"
_DUE_IN_TIME = (
    # Implied by is_due; said so that the planner may take ix_generations_claim (its
    # scope must be in the query) and read the queue in order, not sort it all.
    text(UNFINISHED),
    is_due(bindparam("b_now", type_=_G.lease_expire_time.type)),
    or_(_G.deadline_time.is_(None), _G.deadline_time > bindparam("b_now")),
)
# Longest waiting first: from creation, or from the retry time of one handed back.
_QUEUE_ORDER = (text(CLAIM_ORDER), _G.create_time)
_CLAIMABLE = (
    select(_GENERATIONS)
    .where(*_DUE_IN_TIME)
    .order_by(*_QUEUE_ORDER)
    .with_hint(_GENERATIONS, _CLAIM_INDEX_HINT, dialect_name="sqlite")
)

# What a claim changes, set per row by one executemany statement.
_CLAIMED = (
    "status",
    "complete_time",
    "error_code",
    "error_message",
    "lease_token",
    "lease_expire_time",
    "attempt",
    "start_time",
    "revision",
    "update_time",
)
_CLAIM_UPDATE = (
    update_rows(_GENERATIONS)
    .where(_GENERATIONS.c.id == bindparam("b_id"))
    .values({name: bindparam(name) for name in _CLAIMED})
)


# PostgreSQL's claim. The batch is locked in the innermost query (FOR UPDATE may not sit
# beside a window function); row_number() numbers the rows as that query yields them, in
# queue order, and each row's number picks its token from the array; the row's status
# before the claim comes back with it.
_CLAIM_LOCKED = (
    select(_G.id, _G.status)
    .where(*_DUE_IN_TIME)
    .order_by(*_QUEUE_ORDER)
    .limit(bindparam("b_count", type_=Integer))
    .with_for_update(skip_locked=True)
    .subquery("locked")
)
_CLAIM_PICKED = select(
    _CLAIM_LOCKED.c.id,
    _CLAIM_LOCKED.c.status.label("claimed_from"),
    func.row_number().over().label("claim_position"),
).subquery("picked")
_CLAIM_POSTGRESQL = (
    update_rows(_GENERATIONS)
    .where(_G.id == _CLAIM_PICKED.c.id)
    .values(
        status=MOVES[Move.CLAIM][1].value,
        complete_time=None,
        error_code=None,
        error_message=None,
        # In parentheses: PostgreSQL reads ``$1::varchar[][n]`` as a type, not a subscript.
        lease_token=Grouping(type_coerce(bindparam("b_tokens"), ARRAY(String)))[
            _CLAIM_PICKED.c.claim_position
        ],
        lease_expire_time=bindparam("b_lease_expire_time", type_=_G.lease_expire_time.type),
        attempt=_G.attempt + 1,
        start_time=bindparam("b_now", type_=_G.start_time.type),
        revision=_G.revision + 1,
        update_time=bindparam("b_now", type_=_G.update_time.type),
    )
    .returning(*_GENERATIONS.c, _CLAIM_PICKED.c.claimed_from, _CLAIM_PICKED.c.claim_position)
)


def _claimed_fields(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in _CLAIMED}


async def _images_by_id(session: AsyncSession, image_ids: Sequence[str]) -> dict[str, Image]:
    """The domain Images of these IDs that exist (one Core read; none for no IDs)."""
    if not image_ids:
        return {}
    rows = await session.execute(select(_IMAGES).where(_IMAGES.c.id.in_(image_ids)))
    return {row.id: image_from_values(row._mapping, prefix="") for row in rows}


async def _references_of(
    session: AsyncSession, generations: Sequence[dict[str, Any]]
) -> dict[str, list[ReferenceUse]]:
    """Each generation's references in order (one Core read).

    A generation created without requested references has none (they are resolved
    from the requested ones at create and never added later), so it is not asked for.
    """
    ids = [values["id"] for values in generations if values["requested_references"]]
    if not ids:
        return {}
    rows = await session.execute(
        select(_REFERENCES.c.generation_id, _REFERENCES.c.image_id, _REFERENCES.c.alias)
        .where(_REFERENCES.c.generation_id.in_(ids))
        .order_by(_REFERENCES.c.generation_id, _REFERENCES.c.position)
    )
    found: dict[str, list[ReferenceUse]] = {}
    for generation_id, image_id, alias in rows:
        found.setdefault(generation_id, []).append(ReferenceUse(image_id, alias))
    return found


async def renew_lease(
    session: AsyncSession, generation_id: str, token: str, expire: datetime
) -> bool:
    """Extend a held lease; False if the lease was lost (re-claimed, restarted or deleted)."""
    return (generation_id, token) in await renew_leases(session, {generation_id: token}, expire)


async def renew_leases(
    session: AsyncSession, held: dict[str, str], expire: datetime
) -> set[tuple[str, str]]:
    """Extend every held lease (generation ID -> token) in one statement.

    Returns the (ID, token) pairs still held; the others were lost (re-claimed,
    restarted or deleted).

    On PostgreSQL the rows are locked in ID order first, as a batch of finishes locks
    them (``_FINISH_READ``): an UPDATE alone locks them in the order it finds them, and
    a renewal and a finish batch that each held a row the other wanted waited for one
    another until PostgreSQL's deadlock check (a second) failed one of them.
    """
    if not held:
        return set()
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(_LEASES_LOCK, {"b_ids": list(held)})
    result = await session.execute(
        update_rows(GenerationRow)
        .where(
            GenerationRow.id.in_(list(held)),
            GenerationRow.lease_token.in_(list(held.values())),
        )
        .values(lease_expire_time=expire)
        .returning(GenerationRow.id, GenerationRow.lease_token)
        .execution_options(synchronize_session=False)
    )
    # Tokens are unique, but match pairs anyway: a row re-claimed under another of
    # our tokens is not held by the run that held the old one.
    return {(row.id, row.lease_token) for row in result} & set(held.items())


async def release_lease(
    session: AsyncSession, generation_id: str, token: str, now: datetime
) -> None:
    """Hand a generation back: any worker may take it from ``now`` (status stays PROCESSING).

    The token goes too: a batched renewal (``renew_leases``) that read the holder's
    tokens before this hand-back must not extend a lease that is nobody's any more.
    """
    await session.execute(
        update_rows(GenerationRow)
        .where(GenerationRow.id == generation_id, GenerationRow.lease_token == token)
        .values(lease_token=None, lease_expire_time=now)
    )


async def finish(
    session: AsyncSession, claim: Claim, result: RunResult, now: datetime
) -> Generation | None:
    """Commit a run's result if ``claim`` still holds the lease; None if it was superseded.

    The compare-and-set on the lease token is what makes a regenerated,
    deleted or re-claimed generation ignore a late worker.
    """
    return (await finish_many(session, [(claim, result)], now))[0]


async def finish_many(
    session: AsyncSession, finishes: Sequence[tuple[Claim, RunResult]], now: datetime
) -> list[Generation | None]:
    """``finish`` for several runs in the caller's transaction, in order (None for each
    one superseded); raises what a write that failed raised (the caller rolls back).

    A few statements for the whole batch, not a few per finish (finishes are the
    engine's most frequent writes), all Core: one read locking the rows, one
    executemany insert of the new output images, one executemany update per outcome,
    then the outbox events (``_record_changes``). Every row is written before any
    event: the events take the project's lock on PostgreSQL, and, as in every other
    transaction, after the row locks (a batch that locked a row while holding it could
    deadlock with an API call that holds that row and waits for the lock).
    """
    if not finishes:
        return []
    found = await session.execute(
        _FINISH_READ[_dialect(session)], {"b_ids": [claim.generation.id for claim, _ in finishes]}
    )
    rows = {row.id: row for row in found}
    planned: list[tuple[dict[str, Any], Claim, Image | ImageRow | None] | None] = []
    new_images: list[images.NewImage] = []
    updates: dict[Update, list[dict[str, Any]]] = {_FINISH_SUCCEEDED: [], _FINISH_FAILED: []}
    for claim, result in finishes:
        row = rows.get(claim.generation.id)
        if row is None or row.lease_token != claim.token:
            planned.append(None)  # the compare-and-set on the token failed: superseded
            continue
        values = dict(row._mapping)
        current = GenerationStatus(values["status"])
        changes: dict[str, Any]
        image: Image | ImageRow | None = None
        if result.output is not None:
            changes = {"status": advance(current, Move.SUCCEED).value}
            if _plain_first_output(values):
                new = _new_output_image(values, result.output, now)
                new_images.append(new)
                image = new.image
            else:
                image = await _store_output(session, values, result.output, now)
            changes["output_image_id"] = image.id
        else:
            changes = {
                "status": advance(current, Move.FAIL).value,
                "error_code": result.error_code,
                "error_message": result.error_message,
            }
        changes.update(
            enhanced_prompt=result.enhanced_prompt,
            enhanced_by=result.enhanced_by,
            enhancement_fallback_reason=result.enhancement_fallback_reason,
            processing_time_ms=result.elapsed_ms,
            complete_time=now,
            lease_token=None,
            lease_expire_time=None,
            revision=values["revision"] + 1,
            update_time=now,
        )
        statement = _FINISH_SUCCEEDED if result.output is not None else _FINISH_FAILED
        updates[statement].append({"b_id": values["id"], **changes})
        values.update(changes)
        planned.append((values, claim, image))
    # The images first: the rows point at them.
    await images.insert_images(session, new_images)
    for statement, params in updates.items():
        await fast_insert.execute_many(session, statement, params)
    # A failed rerun keeps the output of the run before.
    kept = await _images_by_id(
        session,
        [
            plan[0]["output_image_id"]
            for plan in planned
            if plan is not None and plan[2] is None and plan[0]["output_image_id"] is not None
        ],
    )
    finished: list[Generation | None] = []
    for plan in planned:
        if plan is None:
            finished.append(None)
            continue
        values, claim, image = plan
        if image is None and values["output_image_id"] is not None:
            image = kept.get(values["output_image_id"])
        # References never change after create: the claim's are the row's.
        finished.append(generation_from_values(values, list(claim.generation.references), image))
    await _record_changes(
        session, [(generation, True) for generation in finished if generation is not None], now
    )
    return finished


def _plain_first_output(values: dict[str, Any]) -> bool:
    """Whether a success's output is a new image that takes no alias (most are): one row
    inserted with the others, nothing else to change."""
    return values["output_image_id"] is None and not (
        values["alias"] or (values["flow_alias"] and values["flow_id"])
    )


def _new_output_image(
    values: dict[str, Any], content: StoredContent, now: datetime
) -> images.NewImage:
    return images.NewImage.of(
        image_id=new_id(),
        project_id=values["project_id"],
        flow_id=values["flow_id"],
        generation_id=values["id"],
        source=ImageSource.GENERATED,
        content=content,
        meta={},
        now=now,
    )


def _finish_update(*columns: str) -> Update:
    """The UPDATE of a finish that sets these columns, built once (no statement and cache
    key built per finish)."""
    names = (*columns, *_FINISHED)
    return (
        update_rows(_GENERATIONS)
        .where(_GENERATIONS.c.id == bindparam("b_id"))
        .values({name: bindparam(name) for name in names})
    )


# What every finish sets, success or failure.
_FINISHED = (
    "enhanced_prompt",
    "enhanced_by",
    "enhancement_fallback_reason",
    "processing_time_ms",
    "complete_time",
    "lease_token",
    "lease_expire_time",
    "revision",
    "update_time",
)
_FINISH_SUCCEEDED = _finish_update("status", "output_image_id")
_FINISH_FAILED = _finish_update("status", "error_code", "error_message")


def _ids_in_list() -> ColumnElement[bool]:
    """``id IN (...)`` of the ``b_ids`` list: rewritten for each length at every execution."""
    return _GENERATIONS.c.id.in_(bindparam("b_ids", expanding=True))


def _ids_in_array() -> ColumnElement[bool]:
    """``id = ANY(...)`` of the ``b_ids`` array (PostgreSQL): one statement for every length,
    without the rewriting of an expanding IN at every execution (a few hundred µs for a
    statement of all of a generation's columns)."""
    return _GENERATIONS.c.id == any_(bindparam("b_ids", type_=ARRAY(String)))


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else ""


# Locked in ID order, whatever order the runs ended in: two batches that share rows (a
# run superseded on one replica, the run that superseded it finishing on another) take
# them in the same order and cannot wait on each other crosswise. By dialect.
_FINISH_READ = {
    name: select(_GENERATIONS).where(ids()).order_by(_GENERATIONS.c.id).with_for_update()
    for name, ids in (("sqlite", _ids_in_list), ("postgresql", _ids_in_array))
}
# Held leases' rows locked in ID order before their renewal (PostgreSQL; see renew_leases).
_LEASES_LOCK = (
    select(_GENERATIONS.c.id).where(_ids_in_array()).order_by(_GENERATIONS.c.id).with_for_update()
)


async def expire_overdue(
    session: AsyncSession, now: datetime, *, skip_locked: bool, limit: int = 100
) -> list[Generation]:
    """End every unfinished generation past its deadline as FAILED (DEADLINE_EXCEEDED).

    A worker still running one loses its lease here and abandons the run; its
    late finish fails the compare-and-set.
    """
    query = (
        select(GenerationRow)
        .where(is_overdue(now))
        .order_by(GenerationRow.deadline_time)
        .with_hint(_GENERATIONS, OVERDUE_INDEX_HINT, dialect_name="sqlite")
    )
    query = query.limit(limit).with_for_update(skip_locked=skip_locked)
    expired: list[Generation] = []
    for row in (await session.scalars(query)).all():
        row.status = advance(GenerationStatus(row.status), Move.EXPIRE).value
        row.error_code = DEADLINE_EXCEEDED
        row.error_message = f"not finished within its timeout of {row.timeout_ms} ms"
        row.complete_time = now
        _clear(row, *_LEASE)
        expired.append(await _touch(session, row, now, moved=True))
    return expired


async def cancel(session: AsyncSession, row: GenerationRow, now: datetime) -> Generation:
    """Cancel a (locked) PENDING or PROCESSING generation; a finished one is refused.

    Clearing the lease is what stops its worker: the worker sees the change
    (a hub wake-up here, a NOTIFY from another replica, or at the latest its
    next lease renewal) and abandons the run; a late finish fails the CAS.
    """
    row.status = advance(GenerationStatus(row.status), Move.CANCEL).value
    row.cancel_time = now
    row.complete_time = now
    _clear(row, *_LEASE)
    return await _touch(session, row, now, moved=True)


async def held_leases(session: AsyncSession, leases: dict[str, str]) -> set[tuple[str, str]]:
    """Which of these leases (generation ID -> token) are still held, in one read."""
    if not leases:
        return set()
    rows = await session.execute(
        select(_GENERATIONS.c.id, _GENERATIONS.c.lease_token).where(
            _GENERATIONS.c.id.in_(list(leases))
        )
    )
    return {(gid, token) for gid, token in rows if token is not None and leases[gid] == token}


async def _store_output(
    session: AsyncSession, values: dict[str, Any], content: StoredContent, now: datetime
) -> Image | ImageRow:
    """Point the generation's output image at ``content`` (a new image on the first run).

    The common case, a first run without aliases, is one Core insert; a rerun (the
    image gets a new version) and aliases go through the image and alias owners' rows.
    """
    existing = values["output_image_id"]
    if existing is not None:
        row = await session.get(ImageRow, existing)
        if row is not None:
            images.replace_content(row, content, values["flow_id"], now)
            await session.flush()
            return row
    new = _new_output_image(values, content, now)
    await images.insert_images(session, [new])
    image = new.image
    alias, flow_alias, flow_id = values["alias"], values["flow_alias"], values["flow_id"]
    if not alias and not (flow_alias and flow_id):
        return image
    # Aliases are given when the output image first exists; later runs keep
    # whatever aliases the image holds then.
    row = await session.get(ImageRow, image.id)
    assert row is not None  # inserted just above, in this transaction
    if alias:
        await aliases.move_project_alias(session, row, alias, now)
    if flow_alias and flow_id:
        await aliases.set_flow_alias(session, flow_id, flow_alias, image.id)
        await session.flush()
    return row


# --- the API's side: change, rerun, delete ---


async def change(
    session: AsyncSession,
    project_id: str,
    row: GenerationRow,
    command: UpdateGeneration,
    now: datetime,
) -> tuple[Generation, bool]:
    """Apply the changed fields (a locked row); a new prompt or aspect ratio starts a new run.

    Returns the new state and whether a new run started.
    """
    rerun = False
    if command.prompt is not None and command.prompt != row.input_prompt:
        row.input_prompt = command.prompt
        rerun = True
    if command.aspect_ratio is not None and command.aspect_ratio != row.aspect_ratio:
        row.aspect_ratio = command.aspect_ratio
        rerun = True
    if command.flow is not None:
        row.flow_id = await ensure_flow(session, project_id, command.flow, now)
        if row.output_image_id:
            image = await session.get(ImageRow, row.output_image_id)
            if image is not None:
                images.follow_generation(image, row.flow_id)
    if command.meta is not None:
        row.meta = command.meta
    if rerun:
        _start_new_run(row, now)
    return await _touch(session, row, now), rerun


async def rerun(session: AsyncSession, row: GenerationRow, now: datetime) -> Generation:
    """Run a (locked) generation again with the same parameters, from any status."""
    _start_new_run(row, now)
    return await _touch(session, row, now)


def _start_new_run(row: GenerationRow, now: datetime) -> None:
    """Back to PENDING for a fresh run; a worker holding the old lease will lose its CAS.

    The webhook and the timeout carry over; the new run's deadline counts from now.
    """
    row.status = advance(GenerationStatus(row.status), Move.RERUN).value
    row.run += 1
    _clear(row, *_RUN_RESULTS, *_LEASE)
    row.deadline_time = _deadline(row.timeout_ms, now)


def _deadline(timeout_ms: int | None, now: datetime) -> datetime | None:
    return now + timedelta(milliseconds=timeout_ms) if timeout_ms else None


def _clear(row: GenerationRow, *columns: InstrumentedAttribute[Any]) -> None:
    for column in columns:
        setattr(row, column.key, None)


async def delete(session: AsyncSession, row: GenerationRow, now: datetime) -> Removed:
    """Delete a (locked) generation and its output image, unless the image holds a project alias.

    The caller removes the generation's objects after the commit, keeping ``kept_key``.
    """
    row.revision += 1
    row.update_time = now
    generation = await generation_from_row(session, row)
    image = await session.get(ImageRow, row.output_image_id) if row.output_image_id else None
    row.output_image_id = None
    await session.flush()
    kept_key: str | None = None
    image_deleted = False
    if image is not None and image.alias:
        images.unlink_from_generation(image)  # kept for its project alias
        kept_key = image.object_key
    elif image is not None:
        await images.delete_image_rows(session, [image])
        image_deleted = True
    await session.execute(delete_rows(GenerationRow).where(GenerationRow.id == row.id))
    await _record_event(session, generation, EventType.DELETED, now)
    return Removed(generation, image_deleted, kept_key)


async def remove_images(
    session: AsyncSession, rows: Sequence[ImageRow], now: datetime
) -> list[Generation]:
    """Delete image rows inside the caller's transaction; return the generations this changed.

    A generation whose output an image was keeps existing without an output;
    flow alias entries and recorded references go with the image (foreign-key
    cascades). Every generation that changed gets a new revision and an outbox
    event, so its watchers see the image go. The caller deletes the objects
    after the commit.
    """
    ids = [row.id for row in rows]
    if not ids:
        return []
    referencing = select(GenerationReferenceRow.generation_id).where(
        GenerationReferenceRow.image_id.in_(ids)
    )
    # Locked first, in the order a finishing worker locks: generation, then image.
    affected = (
        await session.scalars(
            select(GenerationRow)
            .where(or_(GenerationRow.output_image_id.in_(ids), GenerationRow.id.in_(referencing)))
            .with_for_update()
        )
    ).all()
    for generation_row in affected:
        if generation_row.output_image_id in ids:
            generation_row.output_image_id = None
        generation_row.revision += 1
        generation_row.update_time = now
    await session.flush()
    await images.delete_image_rows(session, rows)
    changed: list[Generation] = []
    for generation_row in affected:
        generation = await generation_from_row(session, generation_row)
        await _record_event(session, generation, EventType.UPDATED, now)
        changed.append(generation)
    return changed


# --- revisions and the outbox ---


async def _touch(
    session: AsyncSession, row: GenerationRow, now: datetime, *, moved: bool = False
) -> Generation:
    """A new revision of a changed row, recorded in the outbox.

    ``moved``: the status changed, so the generation's webhook may be due
    (written to the webhook outbox in this same transaction).
    """
    return (await _touch_many(session, [(row, moved)], now))[0]


async def _touch_many(
    session: AsyncSession,
    rows: Sequence[tuple[GenerationRow, bool]],
    now: datetime,
    references: dict[str, tuple[ReferenceUse, ...]] | None = None,
) -> list[Generation]:
    """``_touch`` for several rows (each with its ``moved``): one flush, one read of their
    images and references (none for ``references`` the caller knows), then each row's
    webhook delivery and outbox event."""
    for row, _ in rows:
        row.revision += 1
        row.update_time = now
    await session.flush()
    generations = await generations_from_rows(session, [row for row, _ in rows], references)
    for generation, (_, moved) in zip(generations, rows, strict=True):
        if moved and generation.webhook_url:
            event = event_for(generation.status)
            if event is not None and event.value in generation.webhook_events:
                await webhooks.enqueue(session, generation, event, now)
        await _record_event(session, generation, EventType.UPDATED, now)
    return generations


async def _record_changes(
    session: AsyncSession, changed: Sequence[tuple[Generation, bool]], now: datetime
) -> None:
    """Changed generations' webhook deliveries (each one ``moved`` into an event it asked
    for) and outbox events: what ``_touch_many`` does, for rows the caller wrote with Core.

    The events go in together, as the transaction's last writes, in one executemany
    statement (on PostgreSQL each row's takes its project's lock and queues its NOTIFY).
    """
    for generation, moved in changed:
        if moved and generation.webhook_url:
            event = event_for(generation.status)
            if event is not None and event.value in generation.webhook_events:
                await webhooks.enqueue(session, generation, event, now)
    if not changed:
        return
    # Projects in one order (sorted), so that two batches never wait on each other's
    # project locks crosswise.
    ordered = sorted((generation for generation, _ in changed), key=lambda g: g.project_id)
    rows = [_event_values(generation, EventType.UPDATED, now) for generation in ordered]
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Each row's statement takes its project's lock (again: it is held to the end
        # of the transaction) and queues its NOTIFY; all of them in one executemany.
        locked = [
            {
                **values,
                "lock_project": generation.project_id,
                "channel": EVENTS_CHANNEL,
                "payload": _notify_payload(generation),
            }
            for values, generation in zip(rows, ordered, strict=True)
        ]
        await fast_insert.execute_many(session, _LOCKED_EVENT_INSERT, locked)
        return
    await fast_insert.insert_rows(session, _EVENTS, rows)


def _event_values(generation: Generation, event_type: EventType, now: datetime) -> dict[str, Any]:
    """The outbox row of the generation's current revision."""
    return {
        "project_id": generation.project_id,
        "generation_id": generation.id,
        "flow_id": generation.flow_id,
        "revision": generation.revision,
        "type": event_type.value,
        "status": generation.status.value,
        "snapshot": to_snapshot(generation),
        "create_time": now,
    }


def _notify_payload(generation: Generation) -> str:
    """What every replica's listener is told of a change (see server/events): with the
    revision, so that a process that has already read it (its own change) does not
    read it again."""
    return (
        f"{generation.project_id} {generation.id} {generation.status.value} {generation.revision}"
    )


async def _record_event(
    session: AsyncSession, generation: Generation, event_type: EventType, now: datetime
) -> None:
    """Append the generation's current revision to the outbox (same transaction).

    This must be the last write of its transaction. On PostgreSQL it takes a
    per-project advisory lock first, so the project's outbox sequence numbers
    commit in order (a cursor reader never skips a row that commits late), and
    it queues a NOTIFY that other replicas receive when the transaction commits.
    """
    values = _event_values(generation, event_type, now)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Lock, NOTIFY and insert in one statement: one round trip instead of three, and
        # the lock is held only for it and the commit.
        await fast_insert.insert_rows(
            session,
            _EVENTS,
            [
                {
                    **values,
                    "lock_project": generation.project_id,
                    "channel": EVENTS_CHANNEL,
                    "payload": _notify_payload(generation),
                }
            ],
            statement=_LOCKED_EVENT_INSERT,
        )
        return
    await fast_insert.insert_rows(session, _EVENTS, [values])


def defer_create_inserts(session: AsyncSession) -> None:
    """Collect the inserts of the creates of this transaction (a batch of them, see
    store/group_commit.py), to be written together by ``write_deferred``: referenced
    tables first, the outbox last (on PostgreSQL the project's lock is taken there)."""
    fast_insert.defer_inserts(session, (_FLOWS, _GENERATIONS, _REFERENCES, _EVENTS))


async def write_deferred(session: AsyncSession) -> None:
    """Insert the rows ``defer_create_inserts`` collected so far (before a read that
    must see them, and before the commit)."""
    await fast_insert.write_deferred(session)


def _locked_event_insert() -> Insert:
    """INSERT one outbox row after taking its project's advisory lock and queueing its NOTIFY.

    The lock and the NOTIFY are a materialised CTE (volatile functions are never
    inlined) that the INSERT reads its one row from, so the lock is held before the
    row's sequence number is drawn, as when they were separate statements.
    """
    columns = (
        "project_id",
        "generation_id",
        "flow_id",
        "revision",
        "type",
        "status",
        "snapshot",
        "create_time",
    )
    gate = select(
        func.pg_advisory_xact_lock(func.hashtext(bindparam("lock_project", type_=String))),
        func.pg_notify(bindparam("channel", type_=String), bindparam("payload", type_=String)),
    ).cte("gate")
    row = select(*(bindparam(name, type_=_EVENTS.c[name].type) for name in columns))
    return insert_rows(_EVENTS).from_select(columns, row.select_from(gate))


_LOCKED_EVENT_INSERT = _locked_event_insert()


async def prune_events(session: AsyncSession, before: datetime, batch: int) -> int:
    """Delete up to ``batch`` outbox events older than ``before``; returns how many.

    The latest event of every generation stays whatever its age: it is the snapshot a
    watcher resuming from a pruned revision or cursor is given, and it tells a resumed
    project watch the present state of every generation that changed since its cursor.
    """
    latest = select(func.max(GenerationEventRow.seq)).group_by(GenerationEventRow.generation_id)
    doomed = (
        select(GenerationEventRow.seq)
        .where(GenerationEventRow.create_time < before, GenerationEventRow.seq.not_in(latest))
        .order_by(GenerationEventRow.seq)
        .limit(batch)
    )
    seqs = list((await session.scalars(doomed)).all())
    if seqs:
        # Each project's horizon moves first, in the same transaction: a project watcher
        # resuming from below it is sent a snapshot rather than the rows that are left.
        horizons = await session.execute(
            select(GenerationEventRow.project_id, func.max(GenerationEventRow.seq))
            .where(GenerationEventRow.seq.in_(seqs))
            .group_by(GenerationEventRow.project_id)
        )
        for project_id, pruned_seq in horizons.all():
            await raise_to(
                session, _HORIZONS, {"project_id": project_id}, "pruned_seq", int(pruned_seq)
            )
        await session.execute(
            delete_rows(GenerationEventRow).where(GenerationEventRow.seq.in_(seqs))
        )
    return len(seqs)
