"""A bare grpc.aio echo server in its own process: the baseline every ratio is measured against.

Usage: python bench/echo_server.py --port P [--reply-file PATH] [--fanout]
       [--option NAME=INT ...] [--postgres URL [--connections N]]

It answers ``/bench.Echo/Echo`` with the bytes of ``--reply-file`` (a canned payload the
size of the real response) or, without one, with the request itself. With ``--fanout``
it also streams: ``/bench.Fanout/Watch`` sends the reply bytes at once and then every
message published, and ``/bench.Fanout/Publish`` fans the reply bytes out to every open
Watch (one bounded queue per subscriber, like a server's watchers). Bytes in, bytes out:
no protos, no interceptors, grpc.aio defaults bar the core ``--option``s given (a
benchmark passes the ones its server under test sets). With ``--postgres`` each Echo
first asks the database ``SELECT 1`` through asyncpg on one of N connections held open
(as imagegen's reads are asked): the least any server that reads PostgreSQL once per
call can do. It prints ``ready`` once serving and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

ECHO_SERVICE = "bench.Echo"
FANOUT_SERVICE = "bench.Fanout"
# Messages a subscriber may fall behind before it is dropped (a bound, like imagegen's).
FANOUT_QUEUE = 256

Context = grpc.aio.ServicerContext[bytes, bytes]


def fanout_handler(payload: bytes) -> grpc.GenericRpcHandler:
    """Watch (the payload at once, then each one published) and Publish (to every Watch)."""
    subscribers: set[asyncio.Queue[bytes]] = set()

    async def watch(request: bytes, context: Context) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(FANOUT_QUEUE)
        subscribers.add(queue)
        try:
            yield payload
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    async def publish(request: bytes, context: Context) -> bytes:
        for queue in list(subscribers):
            if queue.full():
                subscribers.discard(queue)  # too slow: it gets nothing more
            else:
                queue.put_nowait(payload)
        return b""

    return grpc.method_handlers_generic_handler(
        FANOUT_SERVICE,
        {
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
            "Publish": grpc.unary_unary_rpc_method_handler(publish),
        },
    )


async def held_connections(url: str, count: int) -> asyncio.Queue[Any]:
    """``count`` asyncpg connections to ``url`` (imagegen's SQLAlchemy URL), idle."""
    import asyncpg

    from server.events.listener import asyncpg_dsn

    idle: asyncio.Queue[Any] = asyncio.Queue()
    for _ in range(count):
        idle.put_nowait(await asyncpg.connect(asyncpg_dsn(url)))
    return idle


async def serve(
    port: int,
    reply: bytes | None,
    fanout: bool,
    options: list[tuple[str, int]],
    postgres: str | None = None,
    connections: int = 4,
) -> None:
    idle = await held_connections(postgres, connections) if postgres else None

    async def echo(request: bytes, context: Context) -> bytes:
        if idle is not None:
            connection = await idle.get()
            try:
                await connection.fetchval("SELECT 1")
            finally:
                idle.put_nowait(connection)
        return request if reply is None else reply

    handlers = [
        grpc.method_handlers_generic_handler(
            ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
    ]
    if fanout:
        handlers.append(fanout_handler(reply or b""))
    server = grpc.aio.server(options=options or None)
    server.add_generic_rpc_handlers(handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(None)


def core_option(text: str) -> tuple[str, int]:
    """``NAME=INT`` as a grpc core channel argument."""
    name, _, value = text.partition("=")
    return name, int(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-file", type=Path)
    parser.add_argument("--fanout", action="store_true", help="serve bench.Fanout too")
    parser.add_argument("--option", type=core_option, action="append", default=[])
    parser.add_argument("--postgres", help="ask this database SELECT 1 before each Echo")
    parser.add_argument("--connections", type=int, default=4, help="held for --postgres")
    args = parser.parse_args()
    reply = args.reply_file.read_bytes() if args.reply_file else None
    asyncio.run(serve(args.port, reply, args.fanout, args.option, args.postgres, args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
