"""Group commit: writes that arrive close together share one transaction.

A create is three or four small inserts; on SQLite its BEGIN IMMEDIATE, its COMMIT and
the Session around them cost about as much as the inserts, and its COMMIT writes about
16 pages to the WAL (a batch of thirty, hardly more). On PostgreSQL the BEGIN and COMMIT
are two of its five round trips, and every commit waits for a WAL flush. Here the writes
that arrive while a transaction is being written, less than ``wait`` after the previous
one, or after a transaction that held several, go in one transaction together: one
BEGIN, one COMMIT and one Session for all of them, and (``begin_batch``/``end_batch``)
their inserts written together at the end. A write after a quiet spell that follows a
lone one goes in a transaction of its own, in its caller's task, as without batching,
unless others reach the group commit within a few turns of the event loop (calls this
process has received already: on a loop busy with other work they come later than
``wait`` after each other).

Nothing of a batch is written unless all of it is. When one of its writes fails (a
validation error found by a read, a constraint) or the commit does, the whole batch is
rolled back and each of its writes runs again in a transaction of its own, as it would
without batching: only the failing one fails. (Not a SAVEPOINT per write: SQLAlchemy
compiles every SAVEPOINT and RELEASE statement afresh, which costs more than the BEGIN
and COMMIT saved.) So a write must be safe to run twice: everything it does is in the
transaction. When the database is out, every caller of the batch gets the error at once
(an outage answers UNAVAILABLE, as before).

On PostgreSQL a transaction holds only writes of one group (the project): each outbox
insert takes its project's advisory lock until the commit, and two transactions taking
two projects' locks in opposite orders would deadlock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from server.store.db import Database
from server.store.outages import outage_of

T = TypeVar("T")

# Writes per shared transaction at most (more wait for the next one).
WRITES_PER_TRANSACTION: Final = 64
# A batch stays open at most this many times ``wait`` while writes keep joining it.
LONGEST_WAITS: Final = 5
# Turns of the event loop a write about to go alone first lets pass: writes whose calls
# this process has already received reach ``run`` within a few turns and join it.
RUNNABLE_TURNS: Final = 3

Write = Callable[[AsyncSession], Awaitable[T]]


@dataclass(slots=True)
class _Pending(Generic[T]):
    """One write waiting for a batch: what to run, what to do once it is committed, its
    group, and where its answer goes."""

    write: Write[T]
    committed: Callable[[T], None] | None
    group: str
    answer: asyncio.Future[T] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """Runs writes (functions of a Session) in shared transactions, one batch at a time."""

    def __init__(
        self,
        db: Database,
        per_transaction: int = WRITES_PER_TRANSACTION,
        *,
        wait: float = 0.0,
        begin_batch: Callable[[AsyncSession], None] | None = None,
        end_batch: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> None:
        """``wait``: while writes arrive less than this many seconds apart, each waits
        this long for others to share its transaction (see ``run``).
        ``begin_batch(session)`` runs when a transaction of several writes opens, and
        ``end_batch(session)`` after its last write, before the commit (say, to collect
        their inserts and write them together)."""
        self._db = db
        self._per_transaction = per_transaction
        self._wait = wait
        self._last_arrival = -math.inf
        # How many writes the last transaction held (1: a write alone), and, while a batch
        # is open, how many it waits for and the future that ends its wait once it has them.
        self._last_batch = 1
        self._goal = 0
        self._filled: asyncio.Future[None] | None = None
        self._begin_batch = begin_batch
        self._end_batch = end_batch
        # SQLite has one writer and no advisory locks: any writes may share a transaction.
        self._mix_groups = db.is_sqlite
        self._pending: list[_Pending[Any]] = []
        # Whether a transaction of this GroupCommit is being written (writes that come
        # meanwhile wait for the next batch), and the task writing the batches.
        self._writing = False
        self._flushing: asyncio.Task[None] | None = None
        # The most writes one transaction has held so far, and how many writes ran again
        # alone after their batch failed (for tests and curiosity).
        self.largest_batch = 0
        self.rerun_alone = 0

    @property
    def busy(self) -> bool:
        """Whether a transaction of this GroupCommit is being written."""
        return self._writing

    @property
    def last_batch(self) -> int:
        """How many writes the last transaction held (1: a write alone)."""
        return self._last_batch

    @property
    def waiting(self) -> int:
        """How many writes wait for the next batch."""
        return len(self._pending)

    async def run(
        self, write: Write[T], *, group: str, committed: Callable[[T], None] | None = None
    ) -> T:
        """The result of ``write(session)`` once its transaction committed.

        ``group``: the project it writes to (see the module's note on PostgreSQL).
        ``committed(result)`` is called right after the commit.

        When no transaction of this GroupCommit is being written, the previous write
        arrived more than ``wait`` ago and went in a transaction of its own, the write lets
        ``RUNNABLE_TURNS`` turns of the loop pass (writes already received join it) and,
        if none came, goes in a transaction of its own in the caller's task: a lone write
        (a caller creating one at a time) costs what it did without batching. While a
        transaction is being written, it waits for the next batch. Otherwise it opens a
        batch and waits for others to join it (on SQLite, whose statements never wait, the
        only way a batch forms under gRPC's one-call-at-a-time delivery); see ``_linger``
        for how long.
        A queued write's ``committed`` is called whether or not its caller is still
        waiting: a caller cancelled after its batch began cannot take its write back (as
        a caller cancelled during its own COMMIT could not), so what follows a commit
        (telling the hub) must not depend on the caller. A caller cancelled before any
        batch took its write is never written.
        """
        now = asyncio.get_running_loop().time()
        # After a batch its callers are likely to write again soon, but after a pause:
        # the batch's answers go out one by one first. Written alone, each such write
        # would cost a whole transaction (see the module's note).
        crowded = self._wait > 0 and (now - self._last_arrival < self._wait or self._last_batch > 1)
        self._last_arrival = now
        if self._writing or crowded:
            pending = _Pending(write, committed, group)
            self._pending.append(pending)
            if not self._writing:  # the first of a batch: it waits for others to join
                self._writing = True
                self._flushing = asyncio.create_task(self._flush(linger=True), name="group-commit")
            elif self._filled is not None and len(self._pending) >= self._goal:
                _wake(self._filled)  # as many as last time: no need to wait for more
            return await self._queued(pending)
        self._writing = True
        try:
            # A write that arrives while an inline (SQLite) write runs on the loop reaches
            # here only after it, later than ``wait`` when the loop is busy: judged by
            # arrival times alone, every write would then go alone, each a whole
            # transaction, and a loop busy with them stays busy.
            for _ in range(RUNNABLE_TURNS):
                await asyncio.sleep(0)
        except BaseException:
            self._writing = False
            self._start_flush()
            raise
        if self._pending:
            pending = _Pending(write, committed, group)
            self._pending.insert(0, pending)
            self._flushing = asyncio.create_task(self._flush(), name="group-commit")
            return await self._queued(pending)
        self._last_batch = 1
        try:
            async with self._db.writing() as session:
                outcome = await write(session)
        finally:
            self._writing = False
            self._start_flush()
        if committed is not None:
            committed(outcome)
        return outcome

    async def _queued(self, pending: _Pending[T]) -> T:
        try:
            return await asyncio.shield(pending.answer)
        except asyncio.CancelledError:
            if pending in self._pending:
                self._pending.remove(pending)
            raise

    def _start_flush(self) -> None:
        if self._pending and not self._writing:
            self._writing = True
            self._flushing = asyncio.create_task(self._flush(), name="group-commit")

    async def _flush(self, linger: bool = False) -> None:
        try:
            if linger:
                await self._linger()
            while self._pending:
                batch = self._next_batch()
                try:
                    await self._commit(batch)
                finally:
                    # Cancelled (the loop is closing): nobody may wait forever.
                    for pending in batch:
                        pending.answer.cancel()
        finally:
            self._writing = False

    async def _linger(self) -> None:
        """Keep a new batch open for others to join its first write: until it holds as
        many writes as the last transaction did (when that held several), or no write
        joined for ``wait``, or ``LONGEST_WAITS`` times ``wait`` have passed, or it is full.

        Under a steady load each batch fills up with the callers the last one answered
        and goes at once, with no idle wait; a burst goes once it stops arriving; a lone
        write waits ``wait`` at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LONGEST_WAITS * self._wait
        self._goal = self._last_batch if self._last_batch > 1 else self._per_transaction
        while len(self._pending) < self._goal:
            joined = len(self._pending)
            self._filled = filled = loop.create_future()
            timer = loop.call_later(min(self._wait, deadline - loop.time()), _wake, filled)
            try:
                await filled
            finally:
                timer.cancel()
                self._filled = None
            if len(self._pending) == joined or loop.time() >= deadline:
                return

    def _next_batch(self) -> list[_Pending[Any]]:
        """The oldest pending writes (of the oldest one's group, unless groups may mix)."""
        group = self._pending[0].group
        batch: list[_Pending[Any]] = []
        left: list[_Pending[Any]] = []
        for pending in self._pending:
            if len(batch) < self._per_transaction and (self._mix_groups or pending.group == group):
                batch.append(pending)
            else:
                left.append(pending)
        self._pending = left
        return batch

    async def _commit(self, batch: list[_Pending[Any]]) -> None:
        self.largest_batch = max(self.largest_batch, len(batch))
        self._last_batch = len(batch)
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        try:
            async with self._db.writing() as session:
                if self._begin_batch is not None:
                    self._begin_batch(session)
                outcomes = [await pending.write(session) for pending in batch]
                if self._end_batch is not None:
                    await self._end_batch(session)
        except Exception as error:
            if outage_of(error) is not None:  # each would fail alone as well
                for pending in batch:
                    _answer(pending, error)
                return
            # None of the batch was written: each write runs again on its own, so that
            # only the failing one fails.
            self.rerun_alone += len(batch)
            for pending in batch:
                await self._alone(pending)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            _answer(pending, outcome, committed=True)

    async def _alone(self, pending: _Pending[Any]) -> None:
        """Run one write in a transaction of its own (what a write without batching does)."""
        try:
            async with self._db.writing() as session:
                outcome = await pending.write(session)
        except Exception as error:
            _answer(pending, error)
            return
        _answer(pending, outcome, committed=True)


def _wake(future: asyncio.Future[None]) -> None:
    """End a batch's wait (its timer, or its last awaited write, may come second)."""
    if not future.done():
        future.set_result(None)


def _answer(pending: _Pending[Any], outcome: Any, *, committed: bool = False) -> None:
    """Tell a write's caller how it went (after its ``committed`` hook, if it was)."""
    if committed and pending.committed is not None:
        pending.committed(outcome)
    if pending.answer.done():  # its caller left
        return
    if isinstance(outcome, Exception):
        pending.answer.set_exception(outcome)
    else:
        pending.answer.set_result(outcome)
