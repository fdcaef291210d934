"""SQLite's shared reader (Database.fetch) is given back by dispose, whatever it was doing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from server.store.db import Database


def _held_connections(db: Database) -> list[int]:
    """A live count of the reads engine's connections checked out and not given back
    (across dispose, which replaces the pool and would hide the old one's)."""
    held = [0]

    def checkout(*_: Any) -> None:
        held[0] += 1

    def checkin(*_: Any) -> None:
        held[0] -= 1

    event.listen(db.read_engine.sync_engine, "checkout", checkout)
    event.listen(db.read_engine.sync_engine, "checkin", checkin)
    return held


async def test_dispose_while_the_reader_opens_leaves_nothing_checked_out(
    tmp_path: Path,
) -> None:
    # A read that arrives as the App stops opens the reader (a thread opens the file)
    # while dispose runs: the reader it opens must not outlive dispose, checked out of a
    # pool nobody closes (the garbage collector's "non-checked-in connection" later).
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'reader.db'}")
    held = _held_connections(db)
    read = asyncio.create_task(db.fetch(text("SELECT 1")))
    await asyncio.sleep(0)  # the read is now waiting for the file to open
    await db.dispose()
    assert [tuple(row) for row in await read] == [(1,)]
    assert held == [0]


async def test_a_read_after_dispose_is_given_back_by_the_next_dispose(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'reader.db'}")
    held = _held_connections(db)
    await db.fetch(text("SELECT 1"))
    assert held == [1]  # the shared reader stays out between reads
    await db.dispose()
    assert held == [0]
    assert [tuple(row) for row in await db.fetch(text("SELECT 2"))] == [(2,)]
    await db.dispose()
    assert held == [0]
