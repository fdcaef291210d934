"""store.fast_insert writes exactly what a Core insert through the Session writes: the same
rows, read back through SQLAlchemy and read raw from the database, for every column type
the hot paths insert (times, JSON with nested and non-ASCII values and None, booleans,
big integers, NULLs), on both backends; and it refuses a row that leaves out a column
SQLAlchemy would fill in from Python."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, text

from server.app import App
from server.domain.ids import new_id
from server.store import fast_insert
from server.store.models import FlowRow, GenerationEventRow, GenerationRow

FLOWS = cast(Table, FlowRow.__table__)
GENERATIONS = cast(Table, GenerationRow.__table__)
EVENTS = cast(Table, GenerationEventRow.__table__)
# With microseconds, and in the future: no deadline of these rows has passed.
WHEN = datetime(2096, 11, 30, 22, 51, 7, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
async def no_engine(app: App) -> None:
    """The rows here must stay as written while they are read back: no claims, no expiry."""
    await app.engine.stop(0)


async def project_of(app: App) -> str:
    rows = await app.db.fetch(text("SELECT id FROM projects"))
    return str(rows[0][0])


def generation(project_id: str, flow_id: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": new_id(),
        "project_id": project_id,
        "flow_id": flow_id,
        "input_prompt": "a café at night — 夜のカフェ, \"quoted\" and 'single'",
        "enhanced_prompt": None,
        "auto_enhance": True,
        "enhancement_template": "general",
        "aspect_ratio": "16:9",
        "status": "pending",
        "output_image_id": None,
        "requested_references": ["hero", "01a2-not-a-uuid"],
        "alias": "@hero",
        "flow_alias": None,
        "meta": {"nested": {"list": [1, 2.5, None, True], "ü": "ß"}, "empty": {}},
        "error_code": None,
        "error_message": None,
        "processing_time_ms": None,
        "run": 1,
        "attempt": 0,
        "revision": 1,
        "lease_token": None,
        "lease_expire_time": None,
        "create_time": WHEN,
        "update_time": WHEN,
        "start_time": None,
        "complete_time": None,
        "model": "local",
        "seed": 2**62 + 7,
        "negative_prompt": "",
        "output_format": "webp",
        "enhanced_by": None,
        "enhancement_fallback_reason": None,
        "live_scope": None,
        "timeout_ms": 90_000,
        "deadline_time": WHEN + timedelta(milliseconds=90_000),
        "cancel_time": None,
        "webhook_url": None,
        "webhook_events": None,
    }
    values.update(changes)
    return values


async def stored(app: App, table: Table, key: str, value: str) -> tuple[Any, Any]:
    """The row as SQLAlchemy reads it, and as the database holds it (raw text)."""
    typed = await app.db.fetch(select(table).where(table.c[key] == value))
    names = ", ".join(c.name for c in table.columns)
    raw = await app.db.fetch(
        text(f"SELECT {names} FROM {table.name} WHERE {key} = :value"), {"value": value}
    )
    return tuple(typed[0]), tuple(raw[0])


async def both_ways(
    app: App, table: Table, key: str, make: Any
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Insert one row through Core and one through fast_insert; return both as stored."""
    core, fast = make(), make()
    async with app.db.writing() as session:
        await session.execute(insert(table), core)
        await fast_insert.insert_rows(session, table, [fast])
    return await stored(app, table, key, core[key]), await stored(app, table, key, fast[key])


def without(row: tuple[Any, ...], index: int) -> tuple[Any, ...]:
    return row[:index] + row[index + 1 :]


async def test_generation_rows_are_stored_alike(app: App) -> None:
    project_id = await project_of(app)
    flow = {"id": new_id(), "project_id": project_id, "create_time": WHEN, "update_time": WHEN}
    async with app.db.writing() as session:
        await fast_insert.insert_rows(session, FLOWS, [flow])
    for changes in (
        {},
        {"webhook_url": "https://example.com/hook", "webhook_events": ["succeeded"]},
        {"auto_enhance": False, "meta": {}, "requested_references": [], "timeout_ms": None},
        {"deadline_time": None, "seed": None, "alias": None},
    ):
        (core, core_raw), (fast, fast_raw) = await both_ways(
            app, GENERATIONS, "id", lambda c=changes: generation(project_id, flow["id"], **c)
        )
        first = [c.name for c in GENERATIONS.columns].index("id")
        assert without(fast, first) == without(core, first)
        assert without(fast_raw, first) == without(core_raw, first)


async def test_outbox_and_flow_rows_are_stored_alike(app: App) -> None:
    project_id = await project_of(app)

    def event() -> dict[str, Any]:
        return {
            "project_id": project_id,
            "generation_id": new_id(),
            "flow_id": None,
            "revision": 3,
            "type": "created",
            "status": "pending",
            "snapshot": {"prompt": "ü — 夜", "references": [{"image_id": None}], "n": 1.5},
            "create_time": WHEN,
        }

    (core, core_raw), (fast, fast_raw) = await both_ways(app, EVENTS, "generation_id", event)
    ignored = {"seq", "generation_id"}
    kept = [i for i, c in enumerate(EVENTS.columns) if c.name not in ignored]
    assert [fast[i] for i in kept] == [core[i] for i in kept]
    assert [fast_raw[i] for i in kept] == [core_raw[i] for i in kept]

    def flow() -> dict[str, Any]:
        return {"id": new_id(), "project_id": project_id, "create_time": WHEN, "update_time": WHEN}

    (core, core_raw), (fast, fast_raw) = await both_ways(app, FLOWS, "id", flow)
    assert fast[1:] == core[1:] and fast_raw[1:] == core_raw[1:]


async def test_several_rows_in_one_call(app: App) -> None:
    project_id = await project_of(app)
    flows = [
        {"id": new_id(), "project_id": project_id, "create_time": WHEN, "update_time": WHEN}
        for _ in range(3)
    ]
    async with app.db.writing() as session:
        await fast_insert.insert_rows(session, FLOWS, flows)
    found = await app.db.fetch(select(FLOWS.c.id).where(FLOWS.c.project_id == project_id))
    assert {row[0] for row in found} >= {flow["id"] for flow in flows}


async def test_a_row_without_a_column_sqlalchemy_would_default_is_refused(app: App) -> None:
    if not app.db.is_sqlite:
        pytest.skip("PostgreSQL inserts go through the Session, which fills defaults in")
    # Refused before anything runs: the table need not exist.
    scratch = Table(
        "scratch",
        MetaData(),
        Column("id", String(36), primary_key=True),
        Column("attempts", Integer, default=5),
    )
    async with app.db.writing() as session:
        with pytest.raises(ValueError, match=r"scratch\.attempts"):
            await fast_insert.insert_rows(session, scratch, [{"id": new_id()}])


async def test_execute_many_writes_what_the_session_writes(app: App) -> None:
    # On PostgreSQL, once the transaction has begun, execute_many runs on asyncpg's own
    # connection; an insert and an update through it store what the Session's do.
    project_id = await project_of(app)
    flow = {"id": new_id(), "project_id": project_id, "create_time": WHEN, "update_time": WHEN}
    core, fast = generation(project_id, flow["id"]), generation(project_id, flow["id"])
    change = {
        "status": "failed",
        "meta": None,
        "error_message": "ü — 夜",
        "complete_time": WHEN + timedelta(seconds=3),
        "lease_expire_time": None,
        "revision": 2**40,
    }
    update = (
        GENERATIONS.update()
        .where(GENERATIONS.c.id == bindparam("b_id"))
        .values({name: bindparam(name) for name in change})
    )
    async with app.db.writing() as session:
        await fast_insert.insert_rows(session, FLOWS, [flow])
        await session.execute(insert(GENERATIONS), core)
        await fast_insert.execute_many(session, insert(GENERATIONS), [fast])
        await session.execute(update, {"b_id": core["id"], **change})
        await fast_insert.execute_many(session, update, [{"b_id": fast["id"], **change}])
    (core_row, core_raw), (fast_row, fast_raw) = [
        await stored(app, GENERATIONS, "id", row["id"]) for row in (core, fast)
    ]
    first = [c.name for c in GENERATIONS.columns].index("id")
    assert without(fast_row, first) == without(core_row, first)
    assert without(fast_raw, first) == without(core_raw, first)


async def test_execute_many_before_the_first_statement_is_inside_the_transaction(
    app: App,
) -> None:
    # asyncpg's connection is in no transaction until SQLAlchemy's first statement begins
    # one: a write before it goes through the Session, and is rolled back with the rest.
    project_id = await project_of(app)
    flow = {"id": new_id(), "project_id": project_id, "create_time": WHEN, "update_time": WHEN}

    async def write_then_fail() -> None:
        async with app.db.writing() as session:
            await fast_insert.execute_many(session, insert(FLOWS), [flow])
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError, match="undo"):
        await write_then_fail()
    assert not await app.db.fetch(select(FLOWS).where(FLOWS.c.id == flow["id"]))


async def test_execute_many_refuses_rows_without_a_parameter(app: App) -> None:
    project_id = await project_of(app)
    flow = {"id": new_id(), "project_id": project_id, "create_time": WHEN, "update_time": WHEN}
    async with app.db.writing() as session:
        await fast_insert.insert_rows(session, FLOWS, [flow])
        if app.db.is_sqlite:
            return  # through the Session, which fills in what it can
        await session.execute(text("SELECT 1"))  # the transaction has begun
        scratch = Table(
            "scratch",
            MetaData(),
            Column("id", String(36), primary_key=True),
            Column("attempts", Integer, default=5),
        )
        with pytest.raises(ValueError, match="attempts"):
            await fast_insert.execute_many(session, insert(scratch), [{"id": new_id()}])
