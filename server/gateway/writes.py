"""One socket write per small response: a response's header block waits for its body.

uvicorn writes a response's status line and headers in one ``transport.write`` and its
body in another, so every REST answer cost two ``send`` system calls and two TCP
segments on the connection (TCP_NODELAY is on), each a trip through the kernel's
network stack that cost more CPU than rendering the body. ``JoiningTransport`` stands
between uvicorn's request cycle and the connection: it holds back a write that ends a
header block and sends it with the next write, which for a whole response comes at
once; a header block with nothing after it in the same turn of the event loop (an event
stream's first event is a while coming) is sent at the end of that turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

HEADER_BLOCK_END = b"\r\n\r\n"


class JoiningTransport(asyncio.Transport):
    """A connection's transport that joins a header block with the write that follows it
    (anything else is the connection's own; closing sends what is held first)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held = b""
        self._flush_scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            data = self._held + bytes(data)
            self._held = b""
        if bytes(data[-4:]) == HEADER_BLOCK_END:
            # A header block (or a chunked body's last chunk): wait for what follows.
            self._held = bytes(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._held and not self._transport.is_closing():
            held, self._held = self._held, b""
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)
