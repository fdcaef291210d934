"""Ending background tasks without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended.

    Their CancelledError is expected and kept here. The caller's own is passed on: a
    caller cancelled while it waits (a timeout around a shutdown step) must stop there,
    and ``contextlib.suppress(CancelledError)`` around the wait would swallow it.
    """
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
