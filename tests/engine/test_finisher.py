"""Finishes share write transactions: fewer commits than runs, each finish atomic on its own."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from conftest import make_settings, started_app
from sqlalchemy import event, func, select, update

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.domain.clock import utcnow
from server.domain.ids import new_id
from server.domain.images import StoredContent
from server.engine.finisher import FINISHES_PER_TRANSACTION, Finisher
from server.store import generations as owner
from server.store.generations import Claim, RunResult
from server.store.models import GenerationEventRow, GenerationRow, ImageRow

RUNS = 80


async def _claimed(app: App, count: int) -> list[Claim]:
    """``count`` generations created through the API and claimed by hand (no workers)."""
    md = (("x-api-key", app.dev_api_key or ""),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for n in range(count):
            await stub.CreateGeneration(g.CreateGenerationRequest(prompt=f"a fox {n}"), metadata=md)
    async with app.db.write.begin() as session:
        return await owner.claim_due(
            session,
            utcnow(),
            timedelta(seconds=60),
            [new_id() for _ in range(count)],
            skip_locked=not app.db.is_sqlite,
        )


def _writes_per_transaction(statements: list[str]) -> list[list[str]]:
    """The generation row updates ("row") and outbox inserts ("event") of each committed
    transaction, in the order they were sent."""
    transactions: list[list[str]] = [[]]
    for statement in statements:
        if statement == "COMMIT":
            transactions.append([])
        elif statement.startswith("UPDATE GENERATIONS"):
            transactions[-1].append("row")
        elif "INSERT INTO GENERATION_EVENTS" in statement:
            transactions[-1].append("event")
    return transactions


def _note_driver_query(seen: list[str], query: Any) -> None:
    """An asyncpg LoggedQuery, as a statement of ``_writes_per_transaction`` (an
    executemany counts once per row it writes)."""
    statement = " ".join(query.query.upper().split()).rstrip(";")
    many = isinstance(query.args, list)
    seen.extend([statement] * (len(query.args) if many else 1))


def _failed(code: str) -> RunResult:
    return RunResult(enhanced_prompt=None, elapsed_ms=5, error_code=code, error_message="no")


async def test_finishes_arriving_together_share_transactions(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    app = App(make_settings(tmp_path / "data", workers=0, **storage))
    await app.start()
    statements: list[str] = []

    def note_commit(_conn: Any) -> None:
        statements.append("COMMIT")

    def note_statement(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        # An executemany statement counts once per row it writes.
        rows = len(parameters) if many else 1
        statements.extend([" ".join(statement.upper().split())] * rows)

    # On PostgreSQL the batch's writes go to asyncpg directly (store/fast_insert.py),
    # unseen by SQLAlchemy's events: asyncpg's query logger of each connection sees them,
    # and its COMMIT, in the order they ran there.
    on_driver: dict[int, list[str]] = {}

    def note_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in on_driver:
            seen = on_driver[id(driver)] = []
            driver.add_query_logger(lambda query: _note_driver_query(seen, query))

    engine = app.db.write_engine.sync_engine
    try:
        claims = await _claimed(app, RUNS)
        assert len(claims) == RUNS
        finisher = Finisher(app.db)
        if app.db.is_sqlite:
            event.listen(engine, "commit", note_commit)
            event.listen(engine, "before_cursor_execute", note_statement)
        else:
            event.listen(engine.pool, "checkout", note_checkout)
        finished = await asyncio.gather(
            *(finisher.finish(claim, _failed("BOOM")) for claim in claims)
        )
        await asyncio.sleep(0)  # the query loggers are called soon after each query
        if app.db.is_sqlite:
            event.remove(engine, "before_cursor_execute", note_statement)
            event.remove(engine, "commit", note_commit)
        else:
            event.remove(engine.pool, "checkout", note_checkout)
            statements = [s for seen in on_driver.values() for s in [*seen, "COMMIT"]]
        assert all(x is not None and x.status.value == "failed" for x in finished)
        assert [x.revision for x in finished if x] == [c.generation.revision + 1 for c in claims]
        # All in a few transactions, no savepoint each (one connection's statements end
        # with a COMMIT of their own above).
        commits = statements.count("COMMIT") - len(on_driver)
        assert commits <= math.ceil(RUNS / FINISHES_PER_TRANSACTION) + 1
        assert not [s for s in statements if s.startswith("SAVEPOINT")]
        # In each transaction every row is written before any outbox event (on PostgreSQL
        # the event takes the project's lock: after the row locks, as everywhere else).
        transactions = _writes_per_transaction(statements)
        assert sum(t.count("row") for t in transactions) == RUNS
        if not app.db.is_sqlite:
            # (SQLite's outbox inserts go to the driver directly, store/fast_insert.py,
            # unseen by these events; with one writer there is no lock order to keep.)
            assert sum(t.count("event") for t in transactions) == RUNS
            for writes in transactions:
                assert writes == sorted(writes, key=["row", "event"].index)
        async with app.db.read() as session:
            events_written = await session.scalar(
                select(func.count())
                .select_from(GenerationEventRow)
                .where(GenerationEventRow.status == "failed")
            )
        assert events_written == RUNS  # each finish wrote its outbox event
    finally:
        await app.stop()


async def test_a_finish_right_after_a_batch_ends_is_written(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    # A finish made in the loop turn in which the last flusher ends (a run woken by its
    # generator in the same turn) must start a flusher of its own, not count on one
    # that has ended. Here the second finish is queued right behind the flusher of the
    # first; on SQLite that flusher writes and ends within its one step.
    async with started_app(make_settings(tmp_path / "data", workers=0, **storage)) as app:
        first, second = await _claimed(app, 2)
        finisher = Finisher(app.db, concurrency=1)
        finishing_first = asyncio.ensure_future(finisher.finish(first, _failed("BOOM")))
        await asyncio.sleep(0)  # it runs, and queues its flusher
        finishing_second = asyncio.ensure_future(finisher.finish(second, _failed("BOOM")))
        done = await asyncio.wait_for(asyncio.gather(finishing_first, finishing_second), 30)
        assert [x.status.value for x in done if x is not None] == ["failed", "failed"]


async def test_a_failing_finish_is_rolled_back_alone(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    async with started_app(make_settings(tmp_path / "data", workers=0, **storage)) as app:
        claims = await _claimed(app, 3)
        broken = claims[1]
        # A state no run can finish from (SUCCESS, yet still leased): its finish raises.
        async with app.db.write.begin() as session:
            await session.execute(
                update(GenerationRow)
                .where(GenerationRow.id == broken.generation.id)
                .values(status="success")
            )
        finisher = Finisher(app.db)
        outcomes = await asyncio.gather(
            *(finisher.finish(claim, _failed("BOOM")) for claim in claims),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], Exception)
        for outcome in (outcomes[0], outcomes[2]):
            assert not isinstance(outcome, BaseException)
            assert outcome is not None
            assert outcome.status.value == "failed"
        async with app.db.read() as session:
            rows = {
                row.id: row
                for row in await session.scalars(
                    select(GenerationRow).where(
                        GenerationRow.id.in_([c.generation.id for c in claims])
                    )
                )
            }
        assert rows[broken.generation.id].status == "success"
        assert rows[broken.generation.id].lease_token == broken.token  # untouched
        for claim in (claims[0], claims[2]):
            assert rows[claim.generation.id].status == "failed"
            assert rows[claim.generation.id].lease_token is None


async def test_a_superseded_finish_answers_none(tmp_path: Path) -> None:
    async with started_app(make_settings(tmp_path / "data", workers=0)) as app:
        (claim,) = await _claimed(app, 1)
        stale = Claim(claim.generation, "someone-else")
        assert await Finisher(app.db).finish(stale, _failed("BOOM")) is None


def _succeeded(claim: Claim) -> RunResult:
    key = f"{claim.generation.project_id}/{claim.generation.id}/out-{claim.token}.png"
    content = StoredContent.describe(key, b"picture of " + claim.token.encode(), "image/png", 8, 8)
    return RunResult(enhanced_prompt=None, elapsed_ms=5, output=content)


async def test_a_batch_mixing_outcomes_finishes_each_as_alone(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    """Plain successes, one whose image takes a project alias, a failure and a superseded
    run, in one batch: each ends as its own finish would have."""
    async with started_app(make_settings(tmp_path / "data", workers=0, **storage)) as app:
        md = (("x-api-key", app.dev_api_key or ""),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a named fox", alias="@named-fox"), metadata=md
            )
        plain = await _claimed(app, 3)
        async with app.db.write.begin() as session:
            named = await owner.claim_due(
                session, utcnow(), timedelta(seconds=60), [new_id()], skip_locked=False
            )
        (aliased,) = [c for c in plain + named if c.generation.alias == "@named-fox"]
        others = [c for c in plain + named if c is not aliased]
        ok, failing, stale = others
        finisher = Finisher(app.db)
        outcomes = await asyncio.gather(
            finisher.finish(ok, _succeeded(ok)),
            finisher.finish(aliased, _succeeded(aliased)),
            finisher.finish(failing, _failed("BOOM")),
            finisher.finish(Claim(stale.generation, "someone-else"), _succeeded(stale)),
        )
        done, named_done, failed, superseded = outcomes
        assert superseded is None
        assert done is not None and done.status.value == "success"
        assert done.output_image is not None
        assert done.output_image.object_key == _succeeded(ok).output.object_key  # type: ignore[union-attr]
        assert named_done is not None and named_done.output_image is not None
        assert named_done.output_image.alias == "@named-fox"
        assert failed is not None and failed.status.value == "failed"
        assert failed.error_code == "BOOM" and failed.output_image is None
        async with app.db.read() as session:
            rows = {
                row.id: row
                for row in await session.scalars(
                    select(GenerationRow).where(
                        GenerationRow.id.in_([c.generation.id for c in [*others, aliased]])
                    )
                )
            }
            image = await session.get(ImageRow, named_done.output_image.id)
        assert image is not None and image.alias == "@named-fox"
        assert rows[done.id].output_image_id == done.output_image.id
        assert rows[done.id].revision == done.revision and rows[done.id].lease_token is None
        assert rows[stale.generation.id].status == "processing"  # untouched
        assert rows[stale.generation.id].lease_token == stale.token
