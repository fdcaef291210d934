"""A stream's response headers as its caller's signal that it has its starting point.

A watch "from now on" starts where its first database read ends. Its headers are sent
once that read is done (``started``, which the interceptor provides per call), so a client
that waits for them and then acts sees every change it causes; other streams send theirs
at once, after authentication.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

# The streams whose headers wait for ``started``: full method names.
HEADERS_WHEN_STARTED = frozenset({"/imagegen.v1.GenerationService/WatchGenerations"})

# Set by the interceptor for each such stream: sends its headers (once).
send_headers: ContextVar[Callable[[], Awaitable[None]]] = ContextVar("send_headers")


async def started() -> None:
    """The stream has its starting point: send its headers now (no-op outside a call)."""
    send = send_headers.get(None)
    if send is not None:
        await send()
