"""Groups the engine's run finishes into shared write transactions (SQLite's one writer).

SQLite has one writer: each finish in a transaction of its own queues every create and
every claim behind it, and when a round of runs ends at once (hundreds of runs waiting
on a hosted model with the same latency) the dispatcher's next claim waits behind
hundreds of finish transactions. Here the finishes that arrive while the writer is busy
are committed together: one BEGIN IMMEDIATE and one COMMIT for all, each finish inside a
SAVEPOINT of its own, so that one that fails (its row gone, a constraint) is rolled back
alone and its run is told, as before; a failed commit fails all of the batch.
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

# Finishes per shared transaction at most (a round of runs ending together is split).
FINISHES_PER_TRANSACTION: Final = 64


@dataclass(slots=True)
class _Pending:
    """One finish waiting for a batch: what to commit, and where its answer goes."""

    claim: Claim
    result: RunResult
    answer: asyncio.Future[Generation | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Finisher:
    """Commits finishes (``store.generations.finish``) in shared transactions."""

    def __init__(self, db: Database, per_transaction: int = FINISHES_PER_TRANSACTION) -> None:
        self._db = db
        self._per_transaction = per_transaction
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None

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
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="finisher")
        try:
            return await asyncio.shield(pending.answer)
        except asyncio.CancelledError:
            if pending in self._pending:
                self._pending.remove(pending)
                raise
            return await _outcome_despite_cancellation(pending.answer)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._per_transaction]
            del self._pending[: self._per_transaction]
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        outcomes: list[Generation | Exception | None] = []
        try:
            async with self._db.writing() as session:
                now = utcnow()
                for pending in batch:
                    try:
                        async with session.begin_nested():
                            outcomes.append(
                                await owner.finish(session, pending.claim, pending.result, now)
                            )
                    except Exception as error:  # this finish alone is rolled back
                        outcomes.append(error)
        except Exception as error:  # BEGIN or COMMIT failed: none of the batch is written
            for pending in batch:
                _answer(pending.answer, error)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            _answer(pending.answer, outcome)


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
