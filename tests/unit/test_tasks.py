"""cancel_and_wait ends background tasks and passes the caller's own cancellation on."""

from __future__ import annotations

import asyncio

import pytest

from server.domain.tasks import cancel_and_wait


async def test_the_tasks_end_cancelled_and_the_caller_goes_on() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    await cancel_and_wait(*tasks)
    assert all(task.cancelled() for task in tasks)


async def test_a_timeout_around_the_wait_is_not_swallowed() -> None:
    async def slow_goodbye() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # holds on through the first cancel
            raise

    task = asyncio.create_task(slow_goodbye())
    await asyncio.sleep(0)  # let it start
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel_and_wait(task)
    # The caller's cancellation reached the task it waited on too.
    assert task.done()


async def test_a_task_that_failed_raises_its_error() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task)
