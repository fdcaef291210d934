"""The engine's concurrency: many waiting runs on few threads, batched claims and lease renewals."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import make_settings
from expect import until_terminal
from sqlalchemy import event, select, text

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.domain.clock import utcnow
from server.domain.ids import new_id
from server.engine.worker import _CLAIM_COALESCE_SECONDS
from server.events.listener import asyncpg_dsn
from server.store import generations as owner
from server.store.models import GenerationRow

IN_FLIGHT = 100
Md = tuple[tuple[str, str], ...]


async def queued(
    data: Path, storage: dict[str, Any], prompt: str, count: int
) -> tuple[list[g.Generation], Md]:
    """``count`` generations created in order by a replica without workers, and its key."""
    filler = App(make_settings(data, workers=0, **storage))
    await filler.start()
    md = (("x-api-key", filler.dev_api_key or ""),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{filler.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            return [
                await stub.CreateGeneration(
                    g.CreateGenerationRequest(prompt=f"{prompt}, number {n}"), metadata=md
                )
                for n in range(count)
            ], md
    finally:
        await filler.stop()


async def test_runs_waiting_on_the_generator_hold_no_thread_each(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # A slow "hosted model": every run waits DELAY s. The queue is filled first (by a
    # replica without workers), so all IN_FLIGHT must be in flight at once, while the
    # process keeps a handful of threads.
    data = tmp_path / "data"
    created, md = await queued(data, storage, "a lantern", IN_FLIGHT)
    threads_before = threading.active_count()
    app = App(
        make_settings(
            data,
            workers=IN_FLIGHT,
            draw_threads=1,
            claim_batch=16,
            generator_delay_seconds=5.0,
            generator_max_side=16,
            **storage,
        )
    )
    await app.start()
    try:
        peak = 0
        threads_at_peak = 0
        for _ in range(600):  # bounded: 60 s at most
            if app.engine.in_flight > peak:
                peak, threads_at_peak = app.engine.in_flight, threading.active_count()
            if peak == IN_FLIGHT:
                break
            await asyncio.sleep(0.1)
        assert peak == IN_FLIGHT, f"only {peak} of {IN_FLIGHT} generations ran at once"
        # The App's own threads (database, draw pool, gRPC) only: none per run.
        assert threads_at_peak <= threads_before + 30  # one thread per run: +IN_FLIGHT
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            for generation in created:
                done = await until_terminal(stub, generation.id, md, 120)
                assert done.status == g.GENERATION_STATUS_SUCCESS
                assert done.output_image.width == 16
    finally:
        await app.stop()


async def test_the_claim_for_a_freed_slot_goes_before_storing_the_picture(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # Runs started together make their pictures together; a new round starts only as
    # fast as it is claimed, so a run that made its picture lets the dispatcher claim
    # for its slot before it stores and commits. One worker, two queued generations:
    # when the first picture is stored, the second is already PROCESSING.
    data = tmp_path / "data"
    (first, second), md = await queued(data, storage, "a heron", 2)
    app = App(make_settings(data, workers=1, generator_delay_seconds=0.5, **storage))
    await app.start()
    try:
        store = app.blobs
        put = store.put
        seen: list[tuple[str, str]] = []

        async def noting_put(key: str, content: bytes, content_type: str) -> None:
            # The other generation's status as this picture is stored (a real store).
            async with app.db.write.begin() as session:
                statuses = dict(
                    (await session.execute(select(GenerationRow.id, GenerationRow.status))).all()
                )
            stored = first.id if first.id in key else second.id
            other = second.id if stored == first.id else first.id
            seen.append((stored, statuses[other]))
            await put(key, content, content_type)

        store.put = noting_put  # type: ignore[method-assign]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            for generation in (first, second):
                done = await until_terminal(stub, generation.id, md, 60)
                assert done.status == g.GENERATION_STATUS_SUCCESS
        assert seen[0] == (first.id, "processing")  # claimed before the first was stored
        assert seen[1] == (second.id, "success")
    finally:
        await app.stop()


async def test_work_arriving_in_a_burst_is_claimed_together(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # Creates a few milliseconds apart, each in a transaction of its own and each waking
    # the idle dispatcher: a claim transaction apiece would take half of SQLite's one
    # writer (or of the project's outbox lock) from the creates. After a claim that found
    # the queue empty, the next waits out the coalescing window: claims are at least that
    # far apart, whatever the creates' pace.
    app = App(make_settings(tmp_path / "data", workers=64, generator_delay_seconds=0.5, **storage))
    await app.start()
    claims: list[float] = []

    def note_claim(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "claim_position" in statement or "INDEXED BY ix_generations_claim" in statement:
            claims.append(time.monotonic())

    event.listen(app.db.write_engine.sync_engine, "before_cursor_execute", note_claim)
    md = (("x-api-key", app.dev_api_key or ""),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            claims.clear()  # the dispatcher's first look, at start
            created = []
            for n in range(30):
                created.append(
                    await stub.CreateGeneration(
                        g.CreateGenerationRequest(prompt=f"a wren, number {n}"), metadata=md
                    )
                )
            burst = list(claims)  # the claims while the creates came
            for generation in created:
                done = await until_terminal(stub, generation.id, md, 60)
                assert done.status == g.GENERATION_STATUS_SUCCESS
    finally:
        event.remove(app.db.write_engine.sync_engine, "before_cursor_execute", note_claim)
        await app.stop()
    window = _CLAIM_COALESCE_SECONDS
    # Claims start at least a window apart; a statement runs a little after its claim
    # starts (its BEGIN), hence the slack of a few windows. One per create: 30.
    assert len(burst) >= 2
    assert len(burst) <= (burst[-1] - burst[0]) / window + 4, [
        round(b - a, 4) for a, b in pairwise(burst)
    ]


async def test_claims_come_in_batches_and_leases_renew_together(app: App) -> None:
    # Workers are on in the fixture's App; these rows are claimed here, by hand,
    # before its dispatcher could (no hub poke, and the claim is one transaction).
    md = (("x-api-key", app.dev_api_key or ""),)
    await app.engine.stop(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for n in range(5):
            await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt=f"a kite, number {n}"), metadata=md
            )
    tokens = [new_id() for _ in range(3)]
    lease = timedelta(seconds=30)
    async with app.db.write.begin() as session:
        claims = await owner.claim_due(
            session, utcnow(), lease, tokens, skip_locked=not app.db.is_sqlite
        )
    assert [claim.token for claim in claims] == tokens
    assert all(claim.generation.status.value == "processing" for claim in claims)
    async with app.db.write.begin() as session:
        rest = await owner.claim_due(
            session, utcnow(), lease, [new_id() for _ in range(10)], skip_locked=False
        )
    assert len(rest) == 2  # five created, three already held
    held = {claim.generation.id: claim.token for claim in claims}
    # One lease is lost: handed back and claimed again under another token.
    lost = claims[0]
    async with app.db.write.begin() as session:
        await owner.release_lease(session, lost.generation.id, lost.token, utcnow())
    async with app.db.write.begin() as session:
        (again,) = await owner.claim_due(
            session, utcnow(), lease, [new_id()], skip_locked=not app.db.is_sqlite
        )
    assert again.generation.id == lost.generation.id
    async with app.db.write.begin() as session:
        kept = await owner.renew_leases(session, held, utcnow() + lease)
    assert kept == {(c.generation.id, c.token) for c in claims[1:]}


async def test_a_renewal_that_read_its_tokens_before_a_hand_back_does_not_extend_it(
    app: App,
) -> None:
    # The lease keeper reads the held tokens, then waits for the writer; meanwhile a run
    # hands its generation back for a retry in a while. The late renewal must not push the
    # hand-back's time a whole lease away (the generation would sit unclaimed that long).
    md = (("x-api-key", app.dev_api_key or ""),)
    await app.engine.stop(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a kite"), metadata=md)
    lease = timedelta(seconds=30)
    async with app.db.write.begin() as session:
        (claim,) = await owner.claim_due(
            session, utcnow(), lease, [new_id()], skip_locked=not app.db.is_sqlite
        )
    held = {claim.generation.id: claim.token}  # what the keeper read
    retry_at = utcnow() + timedelta(seconds=0.2)
    async with app.db.write.begin() as session:
        await owner.release_lease(session, claim.generation.id, claim.token, retry_at)
    async with app.db.write.begin() as session:
        kept = await owner.renew_leases(session, held, utcnow() + lease)
    assert kept == set()
    await asyncio.sleep(0.3)
    async with app.db.write.begin() as session:
        (again,) = await owner.claim_due(
            session, utcnow(), lease, [new_id()], skip_locked=not app.db.is_sqlite
        )
    assert again.generation.id == claim.generation.id
    assert again.generation.attempt == 2


async def test_a_handed_back_generation_queues_behind_those_that_waited_longer(
    app: App,
) -> None:
    # Claims go by time waited, not by age: a generation handed back for a retry rejoins
    # the queue at its retry time, so that retried ones cannot hold every worker while
    # newer generations are never tried.
    md = (("x-api-key", app.dev_api_key or ""),)
    await app.engine.stop(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        older = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="old"), metadata=md)
        newer = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="new"), metadata=md)
    lease = timedelta(seconds=30)
    skip_locked = not app.db.is_sqlite
    async with app.db.write.begin() as session:
        (first,) = await owner.claim_due(
            session, utcnow(), lease, [new_id()], skip_locked=skip_locked
        )
    assert first.generation.id == older.id
    async with app.db.write.begin() as session:
        await owner.release_lease(session, first.generation.id, first.token, utcnow())
    async with app.db.write.begin() as session:
        claims = await owner.claim_due(
            session, utcnow(), lease, [new_id(), new_id()], skip_locked=skip_locked
        )
    assert [claim.generation.id for claim in claims] == [newer.id, older.id]


async def test_a_claim_of_an_expired_lease_is_no_new_processing_event(app: App) -> None:
    # Its worker died mid-run: the generation is claimed again under a new token, as
    # attempt 2, and its webhook is not sent "processing" a second time.
    md = (("x-api-key", app.dev_api_key or ""),)
    await app.engine.stop(0)
    await app.dispatcher.stop()  # the deliveries stay as written, unsent
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        # A public address (private ones are refused); nothing is sent to it.
        hook = g.Webhook(url="https://93.184.216.34/hook", events=["processing"])
        created = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="a heron", webhook=hook), metadata=md
        )
    lease = timedelta(seconds=30)
    skip_locked = not app.db.is_sqlite

    async def claim() -> owner.Claim:
        async with app.db.write.begin() as session:
            (claimed,) = await owner.claim_due(
                session, utcnow(), lease, [new_id()], skip_locked=skip_locked
            )
        return claimed

    first = await claim()
    async with app.db.write.begin() as session:
        await session.execute(
            text("UPDATE generations SET lease_expire_time = :gone WHERE id = :id"),
            {"gone": utcnow() - timedelta(seconds=1), "id": created.id},
        )
    again = await claim()

    assert first.generation.id == again.generation.id == created.id
    assert again.token != first.token
    assert (first.generation.attempt, again.generation.attempt) == (1, 2)
    assert again.generation.revision == first.generation.revision + 1
    assert again.generation.status.value == "processing"
    sent = await app.db.fetch(
        text("SELECT event_type FROM webhook_deliveries WHERE generation_id = :id"),
        {"id": created.id},
    )
    assert [row[0] for row in sent] == ["generation.processing"]


@pytest.mark.parametrize("backend", ["postgresql"])  # row locks are PostgreSQL's
async def test_a_renewal_locks_held_rows_in_id_order(app: App) -> None:
    # A batch of finishes locks its rows in ID order. A renewal that locked them in the
    # order its UPDATE found them could hold a higher ID's row while waiting for a lower
    # one that such a batch held, the batch waiting for the higher one: both stood still
    # until PostgreSQL's deadlock check (a second) failed one. Here another transaction
    # holds the lower ID's row; the renewal of both must wait for it holding nothing.
    md = (("x-api-key", app.dev_api_key or ""),)
    await app.engine.stop(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for prompt in ("a kite", "a boat"):
            await stub.CreateGeneration(g.CreateGenerationRequest(prompt=prompt), metadata=md)
    lease = timedelta(seconds=30)
    async with app.db.write.begin() as session:
        claims = await owner.claim_due(
            session, utcnow(), lease, [new_id(), new_id()], skip_locked=True
        )
    held = {claim.generation.id: claim.token for claim in claims}
    low, high = sorted(held)
    dsn = asyncpg_dsn(app.settings.resolved_database_url)
    holder, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        # The lower ID's row gets the newer tuple, after the higher one's in the table:
        # a scan in table order meets the higher ID first.
        await holder.execute("UPDATE generations SET update_time = update_time WHERE id = $1", low)
        holder_transaction = holder.transaction()
        await holder_transaction.start()
        await holder.execute("SELECT id FROM generations WHERE id = $1 FOR UPDATE", low)
        renewal = asyncio.create_task(_renew(app, held, utcnow() + lease))
        for _ in range(300):  # bounded: 30 s at most
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.1)
        assert waiting == 1, "the renewal never waited for the held row"
        # The renewal holds no row while it waits: the higher ID's row is free.
        async with other.transaction():
            locked = await other.fetchval(
                "SELECT id FROM generations WHERE id = $1 FOR UPDATE NOWAIT", high
            )
        assert locked == high
        await holder_transaction.rollback()
        assert await asyncio.wait_for(renewal, 30) == set(held.items())
    finally:
        await holder.close()
        await other.close()


async def _renew(app: App, held: dict[str, str], expire: datetime) -> set[tuple[str, str]]:
    async with app.db.write.begin() as session:
        # Rows read in table order, as the planner reads hundreds of held leases (a
        # bitmap or sequential scan), not in the primary key's order it picks for two.
        await session.execute(text("SET LOCAL enable_indexscan = off"))
        await session.execute(text("SET LOCAL enable_bitmapscan = off"))
        return await owner.renew_leases(session, held, expire)
