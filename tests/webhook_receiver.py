"""A real HTTP server on 127.0.0.1 that receives webhooks and answers with scripted statuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    """One request as it arrived: path, lower-cased headers, the raw body."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """Records every POST; ``answers`` gives the status of each request in turn (then 200).

    An answer of 0 holds the request open without answering (until the
    receiver is closed); ``extra_headers`` are sent with every answer.
    """

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.extra_headers: dict[str, str] = {}
        self.received: list[Received] = []
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop held connections."""
        for writer in self._held:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> list[Received]:
        """Wait until ``predicate(received)`` holds (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {len(self.received)} requests: {self.types()}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.1)
        return self.received

    def types(self) -> list[str]:
        """The webhook type of each request received, in order."""
        return [json.loads(r.body)["type"] for r in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode().rstrip("\r\n")
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.received.append(Received(request_line.split(" ")[1], headers, body))
        self.arrived.set()
        status = self.answers.pop(0) if self.answers else 200
        if status == 0:
            self._held.append(writer)  # never answered: the sender times out or dies
            return
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.extra_headers.items())
        head = f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n{extra}"
        writer.write(f"{head}\r\nok".encode())
        await writer.drain()
        writer.close()
