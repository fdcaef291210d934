"""Prepared reads (server/store/prepared.py) answer exactly what SQLAlchemy's execution
does, on both backends, and a held PostgreSQL reader that dies is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import asyncpg
import grpc
import pytest
from expect import until_terminal
from google.protobuf import struct_pb2
from postgres import Postgres, database_name
from sqlalchemy import event, literal_column, select, text

from genrpc.imagegen.v1 import flow_pb2, flow_pb2_grpc, generation_pb2_grpc
from genrpc.imagegen.v1 import generation_pb2 as g
from server.app import App
from server.domain.errors import DomainError, Status
from server.store import generation_queries
from server.store.db import Database
from server.store.prepared import PreparedRead

Md = tuple[tuple[str, str], ...]


async def _generation_with_everything(channel: grpc.aio.Channel, auth: Md) -> g.Generation:
    """A finished generation with an output image, two references, meta and a webhook-free
    timeout: most columns of the joined read are filled in."""
    gens = generation_pb2_grpc.GenerationServiceStub(channel)
    outputs = []
    for prompt in ("a fox", "a hare"):
        made = await gens.CreateGeneration(g.CreateGenerationRequest(prompt=prompt), metadata=auth)
        outputs.append((await until_terminal(gens, made.id, auth)).output_image.id)
    meta = struct_pb2.Struct()
    meta.update({"n": 1.5, "tags": ["a", "b"], "nested": {"ok": True}})
    created = await gens.CreateGeneration(
        g.CreateGenerationRequest(
            prompt="a fox in the snow",
            reference_images=outputs,
            meta=meta,
        ),
        metadata=auth,
    )
    return await until_terminal(gens, created.id, auth)


async def _get_params(app: App, generation: g.Generation) -> dict[str, str]:
    """The parameters of the Get read of ``generation``."""
    (owner,) = await app.db.fetch(
        text("SELECT project_id FROM generations WHERE id = :id"), {"id": generation.id}
    )
    return {"generation_id": generation.id, "project_id": owner[0]}


async def test_prepared_rows_equal_sqlalchemy_rows(
    app: App, channel: grpc.aio.Channel, auth: Md
) -> None:
    generation = await _generation_with_everything(channel, auth)
    read = PreparedRead(generation_queries._GET.statement)
    params = await _get_params(app, generation)
    # The read has no ORDER BY (the references are put in order when folded): compare
    # the rows in the references' order.
    by_position = itemgetter(-1)
    assert read.statement.selected_columns.keys()[-1] == "ref_position"
    expected = sorted(
        (tuple(row) for row in await app.db.fetch(read.statement, params)), key=by_position
    )
    got = sorted(await app.db.fetch_prepared(read, params), key=by_position)
    assert len(expected) == 2  # one row per reference
    assert [tuple(row) for row in got] == expected
    wanted = sorted(await app.db.fetch(read.statement, params), key=by_position)
    for row, want in zip(got, wanted, strict=True):
        assert row._mapping == dict(want._mapping)
        assert row.create_time.tzinfo is not None
        assert row.meta == {"n": 1.5, "tags": ["a", "b"], "nested": {"ok": True}}
        assert isinstance(row.auto_enhance, bool)
    # The read finds the row by id alone; the project is compared after it.
    with pytest.raises(DomainError) as refused:
        await generation_queries.fetch_generation(app.db, "nobody", generation.id)
    assert refused.value.status == Status.NOT_FOUND


async def test_references_come_back_in_their_order_whatever_the_rows_order(
    app: App, channel: grpc.aio.Channel, auth: Md
) -> None:
    generation = await _generation_with_everything(channel, auth)
    rows = await app.db.fetch_prepared(generation_queries._GET, await _get_params(app, generation))
    given = [reference.image_id for reference in generation.reference_images]
    assert len(given) == 2
    for order in (rows, list(reversed(rows))):
        (folded,) = generation_queries._fold(order)
        assert [use.image_id for use in folded.references] == given


async def test_a_held_postgres_reader_that_dies_is_replaced(
    app: App, channel: grpc.aio.Channel, auth: Md, backend: str
) -> None:
    if backend != "postgresql":
        return  # SQLite's reader is a file handle: nothing to kill
    gens = generation_pb2_grpc.GenerationServiceStub(channel)
    created = await gens.CreateGeneration(g.CreateGenerationRequest(prompt="a owl"), metadata=auth)
    request = g.GetGenerationRequest(id=created.id)
    await asyncio.gather(*(gens.GetGeneration(request, metadata=auth) for _ in range(8)))
    url: Any = app.db.read_engine.url
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    killer = await asyncpg.connect(dsn)
    try:
        killed = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    assert killed >= 1
    # Every connection the App held is gone, and the database is up: a read that meets
    # a dead connection runs again on a fresh one, so every read answers.
    for _ in range(5):
        await asyncio.gather(*(gens.GetGeneration(request, metadata=auth) for _ in range(8)))


async def test_abandoned_postgres_readers_are_cut_not_left_checked_out(
    postgres_server: Postgres,
) -> None:
    # A stop out of time (the database answers nothing) abandons the held readers: their
    # sockets close at once and the pool no longer counts them out (left checked out,
    # SQLAlchemy warned of them at garbage collection, and they stayed open until exit).
    url = await postgres_server.create_database()
    db = Database(url)
    pool: Any = db.read_engine.sync_engine.pool
    name = database_name(url)
    watcher = await asyncpg.connect(user="postgres", host=postgres_server.socket_dir)

    async def sessions() -> int:
        count = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
        )
        return int(count)

    try:
        read = PreparedRead(select(literal_column("1").label("one")))
        await asyncio.gather(*(db.fetch_prepared(read, {}) for _ in range(3)))
        held = pool.checkedout()
        assert held >= 1
        assert await sessions() >= held

        db.abandon()

        assert pool.checkedout() == 0
        # The server sees each cut socket a moment later.
        for _ in range(200):
            if await sessions() == 0:
                break
            await asyncio.sleep(0.05)
        assert await sessions() == 0
    finally:
        await watcher.close()
        await db.dispose()
        await postgres_server.drop_database(url)


async def test_the_get_read_finds_its_row_by_primary_key_in_a_generic_plan(
    app: App, channel: grpc.aio.Channel, auth: Md, backend: str
) -> None:
    """PostgreSQL's generic plan of the held readers' Get, made on a new deployment's
    tables (no statistics yet), reads one row by the primary key: with the project in
    the WHERE clause too it used the (project_id, create_time) index and read every
    generation of the project, 1.1 ms of database CPU per Get at 32,000 of them."""
    if backend != "postgresql":
        return  # SQLite has no generic plans; its Get reads by the primary key
    gens = generation_pb2_grpc.GenerationServiceStub(channel)
    created = await gens.CreateGeneration(g.CreateGenerationRequest(prompt="a wren"), metadata=auth)
    compiled = generation_queries._GET.bind(app.db.read_engine.dialect)
    params = await _get_params(app, created)
    plan = await _generic_plan(app, compiled.sql, [params[n] for n in compiled.parameters])
    assert "Index Scan using generations_pkey on generations" in plan, plan


async def test_reads_by_id_use_the_primary_key_in_generic_plans(
    app: App, channel: grpc.aio.Channel, auth: Md, backend: str
) -> None:
    """Every statement the API runs to find one generation or flow by ID keeps to the
    primary key in a generic plan (see the test above): the project is compared after."""
    if backend != "postgresql":
        return
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, tuple(parameters or ())))

    engine = app.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        gens = generation_pb2_grpc.GenerationServiceStub(channel)
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        made = await gens.CreateGeneration(
            g.CreateGenerationRequest(prompt="a heron"), metadata=auth
        )
        assert made.flow_id  # a generation without one starts a flow
        await flows.GetFlow(flow_pb2.GetFlowRequest(id=made.flow_id), metadata=auth)
        await gens.CancelGeneration(g.CancelGenerationRequest(id=made.id), metadata=auth)
        await gens.DeleteGeneration(g.DeleteGenerationRequest(id=made.id), metadata=auth)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    by_id = [
        (sql, params)
        for sql, params in seen
        for table in ("generations", "flows")
        if f"WHERE {table}.id = $1" in sql and all(isinstance(p, str) for p in params)
    ]
    assert {sql.split("WHERE ", 1)[1].split(".", 1)[0] for sql, _ in by_id} == {
        "generations",
        "flows",
    }
    for sql, params in by_id:
        plan = await _generic_plan(app, sql, params)
        assert "_project_created" not in plan, f"{sql}\n{plan}"


async def _generic_plan(app: App, sql: str, args: Sequence[str]) -> str:
    """PostgreSQL's generic plan of ``sql`` (what a connection caches for a statement it
    has run a few times), run once with ``args`` (ids the server made: no quotes in them)."""
    url: Any = app.db.read_engine.url
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(
        dsn, server_settings={"plan_cache_mode": "force_generic_plan"}
    )
    try:
        statement = await connection.prepare(sql)
        await statement.fetch(*args)
        name = statement._state.name  # asyncpg's name of the server-side statement
        values = ", ".join(f"'{value}'" for value in args)
        rows = await connection.fetch(f"EXPLAIN EXECUTE {name}({values})")
    finally:
        await connection.close()
    return "\n".join(row[0] for row in rows)
