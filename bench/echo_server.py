"""A bare grpc.aio echo server in its own process: the baseline every ratio is measured against.

Usage: python bench/echo_server.py --port P [--reply-file PATH]

It answers ``/bench.Echo/Echo`` with the bytes of ``--reply-file`` (a canned payload the
size of the real response) or, without one, with the request itself. Bytes in, bytes
out: no protos, no interceptors, grpc.aio defaults. It prints ``ready`` once serving and
stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import grpc

ECHO_SERVICE = "bench.Echo"


async def serve(port: int, reply: bytes | None) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request if reply is None else reply

    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-file", type=Path)
    args = parser.parse_args()
    reply = args.reply_file.read_bytes() if args.reply_file else None
    asyncio.run(serve(args.port, reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
