"""How long a batch of store/group_commit.py stays open, on a real SQLite database: after a
batch, the next writes wait for as many again and go as soon as they are there; a lone
write waits ``wait`` at most, and goes alone at once again after a quiet spell."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from expect import until
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.db import Database
from server.store.group_commit import RUNNABLE_TURNS, GroupCommit

# Far longer than any test may take: a write that waited for it would fail the test.
FOREVER_SECONDS = 600.0
BOUND_SECONDS = 30.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'commit.db'}")
    async with database.writing() as session:
        await session.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))
    try:
        yield database
    finally:
        await database.dispose()


def insert(value: int, busy_seconds: float = 0.0) -> Callable[[AsyncSession], Awaitable[int]]:
    """A write of ``value``; with ``busy_seconds``, it first holds the event loop that long
    (as a busy loop would: nothing else runs meanwhile)."""

    async def write(session: AsyncSession) -> int:
        if busy_seconds:
            time.sleep(busy_seconds)  # noqa: ASYNC251
        await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
        return value

    return write


async def a_batch_of(commit: GroupCommit, db: Database, size: int) -> None:
    """Make ``commit`` write a batch of ``size``: its first write waits for the database's
    write lock (held by another connection, as another process would), the others queue
    behind it, and go together once it is let go."""
    path = db.write_engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    first = asyncio.create_task(commit.run(insert(0), group="p"))
    await until(lambda: commit.busy)
    rest = [asyncio.create_task(commit.run(insert(n), group="p")) for n in range(1, size + 1)]
    await until(lambda: commit.waiting == size)
    other.execute("ROLLBACK")
    other.close()
    await asyncio.wait_for(asyncio.gather(first, *rest), BOUND_SECONDS)
    assert commit.last_batch == size


async def rows(db: Database) -> int:
    ((count,),) = await db.fetch(text("SELECT count(*) FROM t"))
    return int(count)


async def test_after_a_batch_the_next_writes_go_as_soon_as_as_many_have_come(
    db: Database,
) -> None:
    commit = GroupCommit(db, wait=FOREVER_SECONDS)
    await a_batch_of(commit, db, 4)
    # Its callers write again, one after the other: the first waits for the rest (not
    # for a pause of ``wait``, which would fail the bound), and the four go together.
    again = []
    for n in range(4):
        again.append(asyncio.create_task(commit.run(insert(10 + n), group="p")))
        await asyncio.sleep(0)
    written = await asyncio.wait_for(asyncio.gather(*again), BOUND_SECONDS)
    assert sorted(written) == [10, 11, 12, 13]
    assert commit.last_batch == 4
    assert await rows(db) == 9


async def test_a_lone_write_after_a_batch_waits_at_most_wait_then_lone_writes_go_at_once(
    db: Database,
) -> None:
    wait = 0.05
    commit = GroupCommit(db, wait=wait)
    await a_batch_of(commit, db, 3)
    # It waits for the three to come back; nobody joins it, and it goes alone.
    assert await asyncio.wait_for(commit.run(insert(7), group="p"), BOUND_SECONDS) == 7
    assert commit.last_batch == 1
    await asyncio.sleep(2 * wait)  # a quiet spell
    write = asyncio.create_task(commit.run(insert(8), group="p"))
    # Written in the caller's task once the loop turned a few times, not after ``wait``.
    for _ in range(RUNNABLE_TURNS + 1):
        await asyncio.sleep(0)
    assert write.done() and write.result() == 8
    assert commit.last_batch == 1
    assert await rows(db) == 6


async def test_writes_received_while_an_inline_write_ran_share_a_transaction(
    db: Database,
) -> None:
    # SQLite writes on the event loop: a write that arrives while one is written reaches
    # the group commit only after it, later than ``wait`` when that write is slow. Such
    # writes used to go alone, one transaction each, however many were queued.
    wait = 0.001
    commit = GroupCommit(db, wait=wait)
    for rounds in range(3):
        await asyncio.sleep(2 * wait)  # a quiet spell after a lone write
        writes = [commit.run(insert(n, busy_seconds=5 * wait), group="p") for n in range(4)]
        written = await asyncio.wait_for(asyncio.gather(*writes), BOUND_SECONDS)
        assert written == [0, 1, 2, 3]
        assert commit.last_batch == 4, rounds
        # Alone again (waiting ``wait`` at most for others), so the next round starts
        # from a lone write, as after a quiet spell.
        await commit.run(insert(9), group="p")
        assert commit.last_batch == 1
    assert commit.rerun_alone == 0
    assert await rows(db) == 15
