"""The engine's claim takes the longest-waiting due generations first, and reads them from
the claim index in that order; the expiry check finds overdue ones by the deadline index. A
deep queue is never sorted or read whole (both backends)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
from sqlalchemy import Executable, text

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.domain.clock import utcnow
from server.domain.ids import new_id
from server.store import generations as owner
from server.store.generation_queries import first_overdue

LEASE = timedelta(seconds=30)
# Enough waiting rows for PostgreSQL's planner to prefer an index to a sort.
QUEUE = 4096


async def _create(app: App, count: int) -> list[str]:
    """``count`` generations, one after another (each created after the one before)."""
    md = (("x-api-key", app.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        ids = []
        for n in range(count):
            request = g.CreateGenerationRequest(prompt=f"a bell {n}")
            ids.append((await stub.CreateGeneration(request, metadata=md)).id)
        return ids


async def _claim(app: App, count: int) -> list[owner.Claim]:
    async with app.db.write.begin() as session:
        return await owner.claim_due(
            session,
            utcnow(),
            LEASE,
            [new_id() for _ in range(count)],
            skip_locked=not app.db.is_sqlite,
        )


async def test_the_longest_waiting_are_claimed_first(app: App) -> None:
    await app.engine.stop(0)  # the claims here are the only ones
    ids = await _create(app, 4)
    (first,) = await _claim(app, 1)
    assert first.generation.id == ids[0]
    # Handed back to be retried: it waits from now, behind the three created before.
    async with app.db.write.begin() as session:
        await owner.release_lease(session, first.generation.id, first.token, utcnow())
    await asyncio.sleep(0.01)  # a claim takes a lease that expired before its own now
    claims = await _claim(app, 10)
    assert [claim.generation.id for claim in claims] == [*ids[1:], ids[0]]


async def test_a_claim_reads_a_deep_queue_in_index_order(app: App) -> None:
    await app.engine.stop(0)
    await _create(app, 1)
    engine = app.db.write_engine
    sqlite = app.db.is_sqlite
    new_ids = "lower(hex(randomblob(16)))" if sqlite else "gen_random_uuid()::text"
    columns = [column.name for column in owner._GENERATIONS.c]
    copies = ", ".join(new_ids if name == "id" else name for name in columns)
    copy = f"INSERT INTO generations ({', '.join(columns)}) SELECT {copies} FROM generations"
    async with engine.begin() as connection:
        for _ in range(QUEUE.bit_length() - 1):  # doubles each time: QUEUE rows
            await connection.execute(text(copy))
        if not sqlite:
            await connection.execute(text("ANALYZE generations"))
    # PostgreSQL claims in one UPDATE that locks, changes and returns the batch.
    claim = owner._CLAIMABLE.limit(32) if sqlite else owner._CLAIM_POSTGRESQL
    plan = await _plan(app, claim, {"b_count": 32})
    assert "ix_generations_claim" in plan, plan
    assert ("TEMP B-TREE" not in plan) if sqlite else ("Sort" not in plan), plan
    assert "ix_generations_deadline" in await _plan(app, first_overdue(utcnow()))
    assert len(await _claim(app, 32)) == 32


async def _plan(app: App, statement: Executable, given: dict[str, object] | None = None) -> str:
    """The database's plan for ``statement`` (parameters not ``given`` unbound: NULL)."""
    engine = app.db.write_engine
    compiled = statement.compile(dialect=engine.dialect)
    assert compiled.positiontup is not None
    values = {**compiled.params, **(given or {})}
    arguments = tuple(values[name] for name in compiled.positiontup)
    explain = "EXPLAIN QUERY PLAN " if app.db.is_sqlite else "EXPLAIN "
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql(explain + str(compiled), arguments)
        return "\n".join(str(row) for row in result.all())
