"""HTTP/1.1 read deadlines: a client that stalls while sending a request loses its connection.

uvicorn times out idle keep-alive connections only after a response: a connection that
opens and sends nothing, sends half its headers, or stops in the middle of its body holds
its slot (and a task waiting on the body) for as long as the peer likes. This protocol
closes such a connection once it has been silent for the read timeout while the server is
waiting for it. Connections whose request is complete (a long answer, an event stream)
are never timed out here: the server is talking, not waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.gateway.writes import JoiningTransport


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (HTTP parsed in C: h11, pure Python, cost about a
    fifth of a REST read's server CPU) plus a read deadline while a request is incomplete,
    and each response's header block sent with its body (server/gateway/writes.py)."""

    read_timeout_seconds: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # llhttp refuses a control character in any header value with a bare "Invalid
        # HTTP request" 400; the gateway checks the values it reads itself and answers
        # with a reason (INVALID_CORRELATION_ID, a 401 for a malformed key), and passes
        # no other header on, so it takes them as h11 did.
        self.parser.set_dangerous_leniencies(lenient_headers=True)
        self._read_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        # Between the first byte of a request and its last (headers, then body).
        self._mid_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Everything after this writes and closes through it (flow control keeps the
        # connection's own transport): a close sends what it holds first.
        self.transport = JoiningTransport(transport, self.loop)
        self._last_read = self.loop.time()
        self._arm()

    def data_received(self, data: bytes) -> None:
        # The timer stays armed: it looks at the time of the last read when it fires
        # (re-arming it here cost every request a timer and a cancelled one).
        self._last_read = self.loop.time()
        if self._read_timer is None:
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._mid_request = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._mid_request = False
        super().on_message_complete()

    def _arm(self, delay: float | None = None) -> None:
        self._disarm()
        delay = self.read_timeout_seconds if delay is None else delay
        self._read_timer = self.loop.call_later(delay, self._on_silence)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _waiting_for_client(self) -> bool:
        """Whether the server is waiting for the rest of a request (headers or body)."""
        if self._mid_request:
            return True
        # No request under way: before the first request (a keep-alive connection
        # between requests has uvicorn's own, shorter, timer).
        return self.cycle is None or self.cycle.response_complete

    def _on_silence(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        quiet = self.loop.time() - self._last_read
        if quiet < self.read_timeout_seconds:
            self._arm(self.read_timeout_seconds - quiet)  # it read since: not silent yet
            return
        if not self._waiting_for_client():
            # The request is complete and the answer under way: check again later.
            self._arm()
            return
        self.logger.info(
            "Closing a connection silent for %.0f s mid-request.", self.read_timeout_seconds
        )
        # connection_lost marks the request cycle disconnected: a body read ends with
        # http.disconnect, which the gateway logs as the client leaving.
        self.transport.close()


def with_read_timeout(seconds: float) -> type[ReadDeadlineProtocol]:
    """The protocol class for uvicorn's ``http=`` with this read timeout."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_timeout_seconds": seconds})
