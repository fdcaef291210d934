"""Finishes share write transactions: fewer commits than runs, each finish atomic on its own."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from conftest import make_settings
from sqlalchemy import event, func, select, update

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App
from server.domain.clock import utcnow
from server.domain.ids import new_id
from server.engine.finisher import FINISHES_PER_TRANSACTION, Finisher
from server.store import generations as owner
from server.store.generations import Claim, RunResult
from server.store.models import GenerationEventRow, GenerationRow

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


def _failed(code: str) -> RunResult:
    return RunResult(enhanced_prompt=None, elapsed_ms=5, error_code=code, error_message="no")


async def test_finishes_arriving_together_share_transactions(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    app = App(make_settings(tmp_path / "data", workers=0, **storage))
    await app.start()
    begins: list[str] = []

    def count_begins(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.upper().startswith("BEGIN") or statement.upper().startswith("SAVEPOINT"):
            begins.append(statement.upper().split()[0])

    engine = app.db.write_engine.sync_engine
    try:
        claims = await _claimed(app, RUNS)
        assert len(claims) == RUNS
        finisher = Finisher(app.db)
        event.listen(engine, "before_cursor_execute", count_begins)
        finished = await asyncio.gather(
            *(finisher.finish(claim, _failed("BOOM")) for claim in claims)
        )
        event.remove(engine, "before_cursor_execute", count_begins)
        assert all(x is not None and x.status.value == "failed" for x in finished)
        assert [x.revision for x in finished if x] == [c.generation.revision + 1 for c in claims]
        # Each finish in a savepoint of its own, all in a few transactions.
        assert begins.count("SAVEPOINT") == RUNS
        if app.db.is_sqlite:  # PostgreSQL's BEGIN is not a statement SQLAlchemy sends
            assert begins.count("BEGIN") <= math.ceil(RUNS / FINISHES_PER_TRANSACTION) + 1
        async with app.db.read() as session:
            events = await session.scalar(
                select(func.count())
                .select_from(GenerationEventRow)
                .where(GenerationEventRow.status == "failed")
            )
        assert events == RUNS  # each finish wrote its outbox event
    finally:
        await app.stop()


async def test_a_failing_finish_is_rolled_back_alone(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    app = App(make_settings(tmp_path / "data", workers=0, **storage))
    await app.start()
    try:
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
    finally:
        await app.stop()


async def test_a_superseded_finish_answers_none(tmp_path: Path) -> None:
    app = App(make_settings(tmp_path / "data", workers=0))
    await app.start()
    try:
        (claim,) = await _claimed(app, 1)
        stale = Claim(claim.generation, "someone-else")
        assert await Finisher(app.db).finish(stale, _failed("BOOM")) is None
    finally:
        await app.stop()
