"""How long a batch of store/group_commit.py stays open, on a real SQLite database: after a
batch, the next writes wait for as many again and go as soon as they are there; a lone
write waits ``wait`` at most, and goes alone at once again after a quiet spell."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from expect import until
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.db import Database
from server.store.group_commit import GroupCommit

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


def insert(value: int) -> Callable[[AsyncSession], Awaitable[int]]:
    async def write(session: AsyncSession) -> int:
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
    # Written in the caller's task at once: done before the loop ran anything else.
    await asyncio.sleep(0)
    assert write.done() and write.result() == 8
    assert commit.last_batch == 1
    assert await rows(db) == 6
