"""Groups the engine's run finishes into shared write transactions.

On SQLite, with its one writer, each finish in a transaction of its own queues every
create and every claim behind it, and when a round of runs ends at once (hundreds of
runs waiting on a hosted model with the same latency) the dispatcher's next claim waits
behind hundreds of finish transactions. On PostgreSQL each such transaction is a BEGIN
and a COMMIT round trip more, and takes the project's outbox lock once more. Here the
finishes that arrive while a batch is being written are committed together: one BEGIN
and one COMMIT for all (``store.generations.finish_many``: every row first, then every
outbox event). A finish that fails (its row gone, a constraint) undoes the batch, which
is then written again one finish per transaction, so that only that one fails and its
run is told, as before; a failed commit, or the database out of reach, fails all of the
batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final

from server.domain.clock import utcnow
from server.domain.generations import Generation
from server.store import generations as owner
from server.store.db import Database
from server.store.generations import Claim, RunResult
from server.store.outages import outage_of

# Finishes per shared transaction at most (a round of runs ending together is split).
FINISHES_PER_TRANSACTION: Final = 64
# Batches a PostgreSQL database is written at once.
FLUSHERS_POSTGRESQL: Final = 4


@dataclass(slots=True)
class _Pending:
    """One finish waiting for a batch: what to commit, and where its answer goes."""

    claim: Claim
    result: RunResult
    answer: asyncio.Future[Generation | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Finisher:
    """Commits finishes (``store.generations.finish_many``) in shared transactions."""

    def __init__(
        self,
        db: Database,
        per_transaction: int = FINISHES_PER_TRANSACTION,
        concurrency: int | None = None,
    ) -> None:
        self._db = db
        self._per_transaction = per_transaction
        # Batches written at once: one on SQLite (one writer: a second would only wait for
        # the lock); a few on PostgreSQL, where a batch spends most of its time waiting for
        # round trips, and the next can be written meanwhile (rows apart, each taking the
        # project lock at its end).
        if concurrency is None:
            concurrency = 1 if db.is_sqlite else FLUSHERS_POSTGRESQL
        self._concurrency = concurrency
        self._pending: list[_Pending] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def finish(self, claim: Claim, result: RunResult) -> Generation | None:
        """Commit ``result`` if ``claim`` still holds the lease (the finished Generation), or
        None if it was superseded; raises what its finish or the batch's commit raised.

        A cancelled caller whose finish no batch has taken yet is never written. Once a
        batch has taken it, its outcome stands: the caller waits for it and returns it
        (the cancellation is withdrawn), so that a run never deletes the picture of a
        finish that was committed.
        """
        pending = _Pending(claim, result)
        self._pending.append(pending)
        if len(self._flushing) < self._concurrency:
            # Each flusher takes what is pending when it runs, so the finishes arriving
            # in this loop turn still share its transaction.
            self._flushing.add(asyncio.create_task(self._flush(), name="finisher"))
        try:
            return await asyncio.shield(pending.answer)
        except asyncio.CancelledError:
            if pending in self._pending:
                self._pending.remove(pending)
                raise
            return await _outcome_despite_cancellation(pending.answer)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._per_transaction]
                del self._pending[: self._per_transaction]
                await self._commit(batch)
        finally:
            # Uncounted here, in the same step that found nothing pending: a done callback
            # would run a loop turn later, and a finish arriving in between (a run woken by
            # this very batch's answers) would find every flusher still counted and wait
            # forever, its run holding its lease.
            task = asyncio.current_task()
            if task is not None:
                self._flushing.discard(task)

    async def _commit(self, batch: list[_Pending]) -> None:
        outcomes: list[Generation | Exception | None]
        try:
            async with self._db.writing() as session:
                outcomes = list(
                    await owner.finish_many(
                        session, [(pending.claim, pending.result) for pending in batch], utcnow()
                    )
                )
        except Exception as error:
            if len(batch) == 1 or outage_of(error) is not None:
                # BEGIN or COMMIT failed, or the database is gone: none of it is written.
                outcomes = [error] * len(batch)
            else:
                # One finish failed (its row gone, a constraint) and undid the batch: each
                # is written again alone, so that only that one fails.
                outcomes = [await self._alone(pending) for pending in batch]
        for pending, outcome in zip(batch, outcomes, strict=True):
            _answer(pending.answer, outcome)

    async def _alone(self, pending: _Pending) -> Generation | Exception | None:
        try:
            async with self._db.writing() as session:
                return await owner.finish(session, pending.claim, pending.result, utcnow())
        except Exception as error:
            return error


def _answer(
    answer: asyncio.Future[Generation | None], outcome: Generation | Exception | None
) -> None:
    """Give a waiting finish its outcome (a waiter that left has nobody to tell)."""
    if answer.done():
        return
    if isinstance(outcome, Exception):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


async def _outcome_despite_cancellation(
    answer: Awaitable[Generation | None],
) -> Generation | None:
    """Wait for ``answer`` however often this task is cancelled, then withdraw those."""
    cancels = 1
    while True:
        try:
            outcome = await asyncio.shield(answer)
            break
        except asyncio.CancelledError:
            cancels += 1
    task = asyncio.current_task()
    if task is not None:
        for _ in range(cancels):
            task.uncancel()
    return outcome
