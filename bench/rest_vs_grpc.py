"""Benchmark GetGeneration through the REST gateway next to direct gRPC, in the same run.

Usage: python bench/rest_vs_grpc.py [--concurrency 1,16,64] [--seconds S] [--warmup S]
       [--markdown PATH]

One App (SQLite + local images, the gateway in the same process on a free port) holds one
SUCCESS generation. For each concurrency N, N callers each call in a loop for a fixed time:
first directly over one gRPC channel (GetGeneration), then over HTTP/1.1 keep-alive through
the gateway (``GET /api/v1/generations/{id}``, httpx with a pool of N connections). The
ratio REST QPS / gRPC QPS is what the gateway (HTTP parsing, JSON, its own gRPC call) costs
on top of gRPC itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Run from a checkout, where the project is not necessarily installed.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx

from bench.harness import (
    Call,
    Run,
    command_line,
    console,
    drive,
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

SECTION_HEADING = "## GetGeneration: REST gateway vs gRPC"
# A REST call fails by transport error or by an unexpected status (asserted per call).
HTTP_FAILURES = (grpc.aio.AioRpcError, httpx.HTTPError, AssertionError)


@dataclass(frozen=True, slots=True)
class Row:
    """One concurrency level over both protocols."""

    concurrency: int
    grpc: Run
    rest: Run


async def measure(
    levels: Sequence[int], seconds: float, warmup: float
) -> tuple[list[Row], int, int]:
    """Every level over gRPC then REST; also returns the gRPC and JSON reply sizes."""
    async with running_app(workers=1, http_enabled=True, http_port=0) as app:
        assert app.dev_api_key, "a fresh data directory always gets a dev project"
        key = app.dev_api_key
        metadata = (("x-api-key", key),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a lighthouse on a cliff at night"),
                metadata=metadata,
            )
            # Read what a caller reads most: a finished generation with its image.
            async for _ in stub.WatchGeneration(
                g.WatchGenerationRequest(id=created.id), metadata=metadata
            ):
                pass
            request = g.GetGenerationRequest(id=created.id)
            grpc_bytes = (await stub.GetGeneration(request, metadata=metadata)).ByteSize()
            path = f"/api/v1/generations/{created.id}"
            base = f"http://127.0.0.1:{app.http_port}"

            rows = []
            for level in levels:
                grpc_calls = [bind_grpc(stub, request, metadata) for _ in range(level)]
                limits = httpx.Limits(max_connections=level, max_keepalive_connections=level)
                async with httpx.AsyncClient(
                    base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=30
                ) as http:
                    json_bytes = len((await http.get(path)).content)
                    rest_calls = [bind_rest(http, path) for _ in range(level)]
                    if warmup:
                        await drive(grpc_calls, warmup)
                    grpc_run = await drive(grpc_calls, seconds)
                    if warmup:
                        await drive(rest_calls, warmup, HTTP_FAILURES)
                    rest_run = await drive(rest_calls, seconds, HTTP_FAILURES)
                rows.append(Row(level, grpc_run, rest_run))
    return rows, grpc_bytes, json_bytes


def bind_grpc(
    stub: generation_pb2_grpc.GenerationServiceAsyncStub,
    request: g.GetGenerationRequest,
    metadata: tuple[tuple[str, str], ...],
) -> Call:
    async def call() -> object:
        return await stub.GetGeneration(request, metadata=metadata)

    return call


def bind_rest(http: httpx.AsyncClient, path: str) -> Call:
    async def call() -> object:
        response = await http.get(path)
        # A full client: the status is checked and the JSON parsed, as gRPC's reply is.
        assert response.status_code == 200, response.status_code
        return response.json()

    return call


COLUMNS = (
    "callers",
    "gRPC QPS",
    "REST QPS",
    "REST / gRPC",
    "gRPC p50 ms",
    "gRPC p99 ms",
    "REST p50 ms",
    "REST p99 ms",
    "errors",
)


def cells(row: Row) -> tuple[str, ...]:
    return (
        str(row.concurrency),
        f"{row.grpc.qps:,.0f}",
        f"{row.rest.qps:,.0f}",
        f"{ratio(row.rest.qps, row.grpc.qps):.2f}",
        f"{row.grpc.latency.p50:.2f}",
        f"{row.grpc.latency.p99:.2f}",
        f"{row.rest.latency.p50:.2f}",
        f"{row.rest.latency.p99:.2f}",
        str(row.grpc.errors + row.rest.errors),
    )


def describe(seconds: float, warmup: float, grpc_bytes: int, json_bytes: int) -> str:
    return (
        f"Each row: {warmup:g} s warm-up, then {seconds:g} s timed, first over gRPC (one "
        "channel shared by the callers), then over REST (httpx, one keep-alive connection per "
        f"caller). Reply {grpc_bytes} bytes of protobuf, {json_bytes} bytes of JSON envelope. "
        "The REST path is HTTP/1.1 → uvicorn → gateway → gRPC channel → the same gRPC "
        "server, so each REST call includes a gRPC call. Clients, gateway and server share "
        "one process and one event loop, so the client's own cost is in both figures."
    )


def markdown_section(rows: list[Row], text: str) -> str:
    lines = [
        SECTION_HEADING,
        "",
        f"`{command_line()}` — `GET /api/v1/generations/{{id}}` through the REST gateway "
        "(in-process, `X-API-Key` auth) next to `GetGeneration` over a direct gRPC channel, "
        "same generation (SUCCESS, SQLite + local images), same callers and duration, "
        "measured in the same run. Latency is per call, nearest-rank percentiles.",
        "",
        text,
        "",
        machine() + ".",
        "",
        *markdown_table(COLUMNS, [cells(row) for row in rows], left=1),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--concurrency", default="1,16,64", help="comma-separated caller counts (default 1,16,64)"
    )
    parser.add_argument(
        "--seconds", type=float, default=2.5, help="timed seconds per level and protocol"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds before each")
    parser.add_argument("--markdown", type=Path, help=f"write a {SECTION_HEADING!r} section here")
    args = parser.parse_args()
    try:
        levels = [int(item) for item in args.concurrency.split(",")]
    except ValueError as error:
        parser.error(str(error))
    if any(level < 1 for level in levels) or len(levels) > 8:
        parser.error("--concurrency takes 1 to 8 levels, each at least 1")
    if not 0 < args.seconds <= 30 or not 0 <= args.warmup <= 10:
        parser.error("--seconds must be in (0, 30] and --warmup in [0, 10]")

    quiet_logs()
    started = time.perf_counter()
    rows, grpc_bytes, json_bytes = asyncio.run(measure(levels, args.seconds, args.warmup))
    text = describe(args.seconds, args.warmup, grpc_bytes, json_bytes)
    print_table("GetGeneration: REST gateway vs gRPC", COLUMNS, [cells(r) for r in rows])
    console.print(text)
    console.print(machine())
    console.print(f"total {time.perf_counter() - started:.1f} s")
    if args.markdown:
        write_section(args.markdown, markdown_section(rows, text))
        console.print(f"wrote {SECTION_HEADING!r} to {args.markdown}")


if __name__ == "__main__":
    main()
