"""The gateway in processes of its own beside `imagegen serve`, sharing its HTTP socket.

In the server's process the gateway's client calls and the server's handling of them share
one interpreter lock and one core: a REST read cost 1.0-1.1 ms of CPU there against
0.9-1.0 ms for the two processes together, which served 1.6-1.9 times the reads per second
(docs/benchmarks.md, session 13). Each child runs `imagegen gateway` on the listening
socket the parent bound (so a port in use stops the parent's start, and port 0 works),
reaches the gRPC server at the parent's local target, and leaves when the parent does.
``/metrics`` is the parent's: a child relays it from a Unix socket the parent serves it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

log = structlog.get_logger("imagegen.gateway")

# How long a child may take to import, build its routes and start listening.
READY_SECONDS = 60.0
# How often a child checks that its parent is still there (it leaves when not).
PARENT_CHECK_SECONDS = 0.5
# A child that dies is started again after this long, doubling up to the cap.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
# How long a child's /metrics waits for the server's before answering 503.
METRICS_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ChildOptions:
    """What each child is told: the gRPC target, where /metrics comes from, its limits.

    ``env`` holds the settings a child reads from its environment (the gateway token
    among them: never on a command line, where any local user could read it)."""

    target: str
    metrics_socket: str
    env: Mapping[str, str]


class GatewayProcesses:
    """N `imagegen gateway` children on one listening socket, started again if one dies."""

    def __init__(self, sock: socket.socket, count: int, options: ChildOptions) -> None:
        self._sock = sock
        self._count = count
        self._options = options
        self._children: list[asyncio.subprocess.Process] = []
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def pids(self) -> list[int]:
        """The children's process ids (logged at start)."""
        return [child.pid for child in self._children]

    async def start(self) -> None:
        """Start every child and return once each listens; raise OSError if one cannot."""
        try:
            for slot in range(self._count):
                self._children.append(await self._spawn())
                self._watchers.append(asyncio.create_task(self._watch(slot)))
        except BaseException:
            await self.stop(0)
            raise

    async def _spawn(self) -> asyncio.subprocess.Process:
        ready_read, ready_write = os.pipe()
        command = [
            sys.executable,
            "-m",
            "server",
            "gateway",
            "--target",
            self._options.target,
            "--listen-fd",
            str(self._sock.fileno()),
            "--ready-fd",
            str(ready_write),
            "--metrics-from",
            self._options.metrics_socket,
            "--parent-pid",
            str(os.getpid()),
        ]
        try:
            child = await asyncio.create_subprocess_exec(
                *command,
                env={**os.environ, **self._options.env},
                pass_fds=(self._sock.fileno(), ready_write),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
        try:
            said = await _said(ready_read)
        except BaseException:  # cancelled by stop(): the child must not outlive it
            await _end(child, 0)
            raise
        if said != b"ready":
            await _end(child, 0)
            raise OSError(f"the gateway process did not start (exit code {child.returncode})")
        return child

    async def _watch(self, slot: int) -> None:
        """Start the slot's child again whenever it dies (until stop); one that keeps
        dying soon after starting waits longer each time."""
        pause = RESTART_FIRST_SECONDS
        while True:
            started = time.monotonic()
            code = await self._children[slot].wait()
            if time.monotonic() - started > RESTART_MAX_SECONDS:
                pause = RESTART_FIRST_SECONDS
            log.error("gateway_process_exited", exit_code=code, restart_in=pause)
            while True:
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESTART_MAX_SECONDS)
                try:
                    self._children[slot] = await self._spawn()
                    break
                except OSError as error:
                    log.error("gateway_process_restart_failed", error=str(error))

    async def stop(self, grace_seconds: float) -> None:
        """Ask every child to finish its requests (SIGTERM) within the grace, then kill."""
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await asyncio.gather(*(_end(child, grace_seconds) for child in self._children))


async def _said(fd: int) -> bytes:
    """What a child wrote to its ready pipe before closing it (or exiting), stripped; b""
    if it said nothing within READY_SECONDS. Takes ``fd`` over (closes it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        return (await asyncio.wait_for(reader.read(), READY_SECONDS)).strip()
    except TimeoutError:
        return b""
    finally:
        transport.close()


async def _end(child: asyncio.subprocess.Process, grace_seconds: float) -> None:
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.wait(), grace_seconds + 1)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()


def metrics_socket_name() -> str:
    """A new abstract Unix socket name for one server's metrics relay."""
    return f"imagegen-metrics-{os.getpid()}-{secrets.token_hex(8)}"


async def serve_metrics(name: str, render: Callable[[], bytes]) -> asyncio.Server:
    """Answer each connection to the abstract socket ``name`` with ``render()``, then close."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(render())
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(answer, path="\0" + name)


def relayed_metrics_route(name: str, content_type: str) -> Route:
    """GET /metrics in a child: the parent's, read from its relay socket."""

    async def scrape(_request: Request) -> Response:
        try:
            async with asyncio.timeout(METRICS_SECONDS):
                reader, writer = await asyncio.open_unix_connection(path="\0" + name)
                try:
                    body = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return Response("the server's metrics cannot be read\n", status_code=503)
        return Response(body, media_type=content_type)

    return Route("/metrics", scrape, methods=["GET"])


async def leave_with_parent(parent_pid: int, leave: Callable[[], None]) -> None:
    """Call ``leave`` once this process's parent is no longer ``parent_pid`` (it died:
    the child was handed to another process), checking every PARENT_CHECK_SECONDS."""
    # Polled: nothing portable tells a process that its parent died.
    while os.getppid() == parent_pid:  # noqa: ASYNC110
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    leave()
