"""A TCP front for a unix socket that can go silent: a network partition, with no reset."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class _Link:
    """One proxied connection: its two writers, and whether it still carries bytes."""

    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    silent: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class SilentProxy:
    """Forwards 127.0.0.1:<port> to a unix socket. ``go_silent`` drops every byte of the
    connections open at that moment, both ways, and leaves their sockets open: their peers
    hear nothing and no error. Connections made afterwards carry bytes as usual."""

    def __init__(self, unix_path: str) -> None:
        self._unix_path = unix_path
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def go_silent(self) -> int:
        """Silence every connection open now; returns how many."""
        for link in self._links:
            link.silent = True
        return len(self._links)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for pump in link.pumps:
                pump.cancel()
            for writer in link.writers:
                writer.close()
        # Each pump ends cancelled, or with its socket's error: all expected here.
        await asyncio.gather(
            *(p for link in self._links for p in link.pumps), return_exceptions=True
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self._unix_path)
        link = _Link((writer, up_writer))
        self._links.append(link)
        link.pumps = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link) -> None:
        while data := await source.read(65536):
            if link.silent:
                continue  # lost on the way
            sink.write(data)
            await sink.drain()
        if not link.silent:
            sink.close()
