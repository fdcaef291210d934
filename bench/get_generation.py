"""Benchmark GetGeneration QPS and latency against a bare grpc.aio echo server in the same run.

Usage: python bench/get_generation.py [--loads 1x1,16x1,64x1,64x4] [--seconds S]
       [--warmup S] [--markdown PATH]

Each load is CALLERSxCHANNELS: that many concurrent callers, spread round-robin over
that many channels, each calling in a loop for a fixed time. The same load runs against
imagegen's GetGeneration (one SUCCESS generation, SQLite + local images) and against a
bare grpc.aio server that answers every call with the same bytes GetGeneration returns,
both started in this process. The ratio imagegen QPS / echo QPS is what the service
(interceptor, auth lookup, read transaction, conversion) costs on top of gRPC itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

# Run from a checkout, where the project is not necessarily installed.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench.harness import (
    ECHO_METHOD,
    Call,
    Run,
    command_line,
    console,
    drive,
    echo_server,
    load1,
    load_note,
    machine,
    markdown_table,
    print_table,
    quiet_logs,
    ratio,
    running_app,
    write_section,
)
from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc

SECTION_HEADING = "## GetGeneration vs bare grpc.aio echo"
CHANNEL_OPTIONS = (
    # Without it, channels to the same address share one subchannel (one TCP
    # connection), and "several channels" would measure one connection again.
    ("grpc.use_local_subchannel_pool", 1),
)

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Load:
    """Concurrent callers spread over channels."""

    callers: int
    channels: int

    @classmethod
    def parse(cls, text: str) -> Load:
        callers, _, channels = text.partition("x")
        load = cls(int(callers), int(channels or 1))
        if load.callers < 1 or not 1 <= load.channels <= load.callers:
            raise ValueError(f"need callers >= channels >= 1, not {text!r}")
        return load

    def __str__(self) -> str:
        return f"{self.callers}x{self.channels}"


@dataclass(frozen=True, slots=True)
class Row:
    """One load against both servers."""

    load: Load
    echo: Run
    imagegen: Run


async def measure(
    loads: Sequence[Load], seconds: float, warmup: float
) -> tuple[list[Row], int, int]:
    """Run every load against echo then imagegen; also returns request and response sizes."""
    async with running_app(workers=1) as app:
        assert app.dev_api_key, "a fresh data directory always gets a dev project"
        metadata: Metadata = (("x-api-key", app.dev_api_key),)
        address = f"127.0.0.1:{app.grpc_port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a lighthouse on a cliff at night"),
                metadata=metadata,
            )
            # Get what a real caller gets most: a finished generation with its image.
            async for _ in stub.WatchGeneration(
                g.WatchGenerationRequest(id=created.id), metadata=metadata
            ):
                pass
            request = g.GetGenerationRequest(id=created.id)
            reply = (await stub.GetGeneration(request, metadata=metadata)).SerializeToString()

        rows = []
        timing = (warmup, seconds)
        async with echo_server(reply) as echo_port:
            echo_address = f"127.0.0.1:{echo_port}"
            for load in loads:
                echo = await run_load(echo_address, load, request, metadata, timing, echo=True)
                imagegen = await run_load(address, load, request, metadata, timing, echo=False)
                rows.append(Row(load, echo, imagegen))
    return rows, request.ByteSize(), len(reply)


async def run_load(
    address: str,
    load: Load,
    request: g.GetGenerationRequest,
    metadata: Metadata,
    timing: tuple[float, float],
    *,
    echo: bool,
) -> Run:
    """Open the load's channels, warm up, then time it (fresh channels for every run)."""
    warmup, seconds = timing
    async with AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            )
            for _ in range(load.channels)
        ]
        calls: list[Call] = []
        for index in range(load.callers):
            channel = channels[index % load.channels]
            if echo:
                # The client side matches GetGeneration's: same request bytes and metadata,
                # and the reply is parsed into a Generation message.
                method = channel.unary_unary(
                    ECHO_METHOD,
                    request_serializer=g.GetGenerationRequest.SerializeToString,
                    response_deserializer=g.Generation.FromString,
                )
            else:
                method = generation_pb2_grpc.GenerationServiceStub(channel).GetGeneration
            calls.append(bind(method, request, metadata))
        if warmup:
            await drive(calls, warmup)
        return await drive(calls, seconds)


def bind(
    method: grpc.aio.UnaryUnaryMultiCallable[g.GetGenerationRequest, g.Generation],
    request: g.GetGenerationRequest,
    metadata: Metadata,
) -> Call:
    """A no-argument call of ``method``."""

    async def call() -> object:
        return await method(request, metadata=metadata)

    return call


COLUMNS = (
    "callers",
    "channels",
    "echo QPS",
    "imagegen QPS",
    "imagegen / echo",
    "echo p50 ms",
    "echo p99 ms",
    "imagegen p50 ms",
    "imagegen p99 ms",
    "errors",
)


def cells(row: Row) -> tuple[str, ...]:
    return (
        str(row.load.callers),
        str(row.load.channels),
        f"{row.echo.qps:,.0f}",
        f"{row.imagegen.qps:,.0f}",
        f"{ratio(row.imagegen.qps, row.echo.qps):.2f}",
        f"{row.echo.latency.p50:.2f}",
        f"{row.echo.latency.p99:.2f}",
        f"{row.imagegen.latency.p50:.2f}",
        f"{row.imagegen.latency.p99:.2f}",
        str(row.echo.errors + row.imagegen.errors),
    )


def describe(seconds: float, warmup: float, request_bytes: int, reply_bytes: int) -> str:
    return (
        f"Each row: {warmup:g} s warm-up, then {seconds:g} s timed, first against the echo "
        f"server, then against imagegen, on fresh channels each time. Request {request_bytes} "
        f"bytes, reply {reply_bytes} bytes on both. Client and both servers share one process "
        "and one event loop (as in the tests), so the client's own cost is in both figures "
        "and the ratio understates the gap between the servers alone."
    )


def markdown_section(rows: list[Row], text: str, machine_line: str) -> str:
    lines = [
        SECTION_HEADING,
        "",
        f"`{command_line()}` — GetGeneration (one SUCCESS generation, `x-api-key` auth, "
        "SQLite + local images) next to a bare grpc.aio server answering `/bench.Echo/Echo` "
        "with the same reply bytes, same callers, channels and duration, measured in the "
        "same run. Latency is per call, nearest-rank percentiles.",
        "",
        text,
        "",
        machine_line,
        "",
        *markdown_table(COLUMNS, [cells(row) for row in rows], left=2),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--loads",
        default="1x1,16x1,64x1,64x4",
        help="comma-separated CALLERSxCHANNELS (default 1x1,16x1,64x1,64x4)",
    )
    parser.add_argument(
        "--seconds", type=float, default=2.5, help="timed seconds per load and server"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds before each")
    parser.add_argument("--markdown", type=Path, help=f"write a {SECTION_HEADING!r} section here")
    args = parser.parse_args()
    try:
        loads = [Load.parse(item) for item in args.loads.split(",")]
    except ValueError as error:
        parser.error(str(error))
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")

    quiet_logs()
    load_at_start = load1()
    started = time.perf_counter()
    rows, request_bytes, reply_bytes = asyncio.run(measure(loads, args.seconds, args.warmup))
    text = describe(args.seconds, args.warmup, request_bytes, reply_bytes)
    print_table("GetGeneration vs bare grpc.aio echo", COLUMNS, [cells(r) for r in rows], left=2)
    console.print(text)
    machine_line = f"{machine()}; {load_note(load_at_start)}."
    console.print(machine_line)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    if args.markdown:
        write_section(args.markdown, markdown_section(rows, text, machine_line))
        console.print(f"wrote {SECTION_HEADING!r} to {args.markdown}")


if __name__ == "__main__":
    main()
