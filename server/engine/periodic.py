"""A background chore run every few seconds, one pass at a time, reporting outages once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from server.domain.tasks import cancel_and_wait
from server.store.outages import Dependencies, outage_of

log = structlog.get_logger("imagegen.engine")


class Periodic:
    """Runs ``one_pass`` now and then every ``interval`` seconds until stopped.

    A pass that fails because a dependency is down is an outage (counted and
    logged once by ``dependencies``); any other failure is logged with its
    traceback as ``<name>_failed``. Either way the next pass comes on time.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        one_pass: Callable[[], Awaitable[object]],
        dependencies: Dependencies,
    ) -> None:
        self._name = name
        self._interval = interval
        self._one_pass = one_pass
        self._dependencies = dependencies
        self.stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the first pass now, in the background."""
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Stop (an unfinished pass is abandoned; what it committed stays)."""
        self.stopping.set()
        if self._task is not None:
            await cancel_and_wait(self._task)

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        self.stopping.set()
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._one_pass()
            except Exception as error:
                dependency = outage_of(error)
                if dependency is None:
                    log.exception(f"{self._name}_failed")
                else:
                    self._dependencies.failed(dependency, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self._interval)
