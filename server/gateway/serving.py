"""Run a gateway under uvicorn on the running event loop, and stop it gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from starlette.applications import Starlette

from server.gateway.deadlines import with_read_timeout
from server.gateway.state import Gateway

log = structlog.get_logger("imagegen.gateway")


class GatewayServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner and ends event streams on stop."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway | None) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process (imagegen serve, or a test) owns SIGTERM/SIGINT and calls stop().
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Event streams and Prefer waits would otherwise hold the shutdown until their
        # clients leave: end them first, then let uvicorn drain the rest.
        if self.gateway is not None:
            self.gateway.closing.set()
        await super().shutdown(sockets)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop accepting, finish the requests in flight (within the grace), and return.

        ``grace_seconds`` replaces the configured grace (what is left of a shutdown's).
        """
        if grace_seconds is not None:
            self.config.timeout_graceful_shutdown = max(0, math.ceil(grace_seconds))
        self.should_exit = True
        if self.task is not None:
            await self.task
        if self.gateway is not None:
            await self.gateway.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Created with proto=IPPROTO_TCP (socket.create_server leaves it 0): asyncio sets
    # TCP_NODELAY only on sockets that say they are TCP, and without it every small
    # response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno, f"cannot listen for HTTP on {host}:{port}: {error.strerror}"
        ) from None
    sock.setblocking(False)
    return sock


async def serve_gateway(
    app: Starlette,
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    grace_seconds: float = 5.0,
    read_timeout_seconds: float = 15.0,
) -> tuple[GatewayServer, asyncio.Task[None], int]:
    """Serve ``app`` on host:port (or on ``sock``, a listening socket bound already) on
    this event loop; returns once it accepts connections.

    Returns the server (``await server.stop()`` shuts it down gracefully), the task running
    it, and the port actually bound (useful with port 0). The socket is bound here, so an
    address in use raises OSError to the caller instead of exiting the process. A client
    silent for ``read_timeout_seconds`` in the middle of sending a request is disconnected.
    """
    sock = bind(host, port) if sock is None else sock
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        ws="none",
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 and rewrite the peer;
        # the gateway decides whom to believe itself (TRUSTED_PROXIES, gateway/clientip.py).
        proxy_headers=False,
        http=with_read_timeout(read_timeout_seconds),
        timeout_graceful_shutdown=math.ceil(grace_seconds),
    )
    server = GatewayServer(config, getattr(app.state, "gateway", None))
    server.task = asyncio.create_task(server.serve(sockets=[sock]), name=f"gateway:{bound}")
    while not server.started:
        if server.task.done():
            sock.close()
            await server.task  # raises what stopped it
            raise RuntimeError("the gateway stopped while starting")
        await asyncio.sleep(0.01)
    log.info("gateway_serving", host=host, port=bound)
    return server, server.task, bound
