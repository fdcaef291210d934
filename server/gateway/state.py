"""What the handlers of one gateway share: the upstream API, the heartbeat, the shutdown signal."""

from __future__ import annotations

import asyncio

from server.gateway.upstream import Upstream


class Gateway:
    """One gateway's shared parts (kept in the Starlette app's ``state.gateway``)."""

    def __init__(self, upstream: Upstream, heartbeat_seconds: float) -> None:
        if heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds must be positive")
        self.upstream = upstream
        self.heartbeat_seconds = heartbeat_seconds
        # Set when the HTTP server shuts down: event streams and Prefer waits end at once
        # (with what they have) instead of holding the shutdown for their full length.
        self.closing = asyncio.Event()
        # One clock for every event stream's heartbeat: an idle stream owns no timer.
        self._beat: asyncio.Future[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def next_beat(self) -> asyncio.Future[None]:
        """A future shared by all streams, done at the next heartbeat (never cancel it)."""
        if self._beat is None:
            self._beat = asyncio.get_running_loop().create_future()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="sse-heartbeat")
        return self._beat

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            beat, self._beat = self._beat, None
            if beat is not None:
                beat.set_result(None)

    async def close(self) -> None:
        """End the streams and waits in flight, then close the channel the gateway opened."""
        self.closing.set()
        if self._ticker is not None:
            self._ticker.cancel()
        await self.upstream.close()
