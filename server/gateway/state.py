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

    async def close(self) -> None:
        """End the streams and waits in flight, then close the channel the gateway opened."""
        self.closing.set()
        await self.upstream.close()
