"""Benchmark W follow-watchers on one generation against a bare grpc.aio fan-out server.

Usage: python bench/watch_fanout.py [--watchers 1000,5000,10000] [--idle S] [--channels C]
       [--markdown PATH]

Each row starts two servers, each in a process of its own (bench/processes.py), one
after the other: `imagegen serve` (SQLite + local images, the defaults, bar a per-key
stream limit raised to W) holding one SUCCESS generation, and the bare grpc.aio server
bench/echo_server.py in its streaming fan-out mode, which sends a canned message of the
same size to every subscriber and fans a published one out to all of them (a queue per
subscriber, no interceptor). Both set the same grpc core options (CORE_OPTIONS). From
this process, over C channels, W streams subscribe (WatchGeneration follow=true,
since_revision=0: the snapshot; the bare server sends its first message at once);
then both servers sit idle for S seconds; then a Regenerate (or a Publish) goes out
and every stream's first message after it is timed. Messages are read as raw
bytes on both, so the client does the same work for each.

- subscribe s: from the first call to the last stream's first message.
- delivery p50/p99 ms: from just before the Regenerate / Publish call to each
  stream's next message.
- change ack ms: how long the Regenerate / Publish call itself took to answer (the
  part of every delivery spent before the change even exists).
- KiB/watcher: growth of the server's resident memory from before the first
  subscription to after the last, over W.
- idle CPU %: the server's user+system CPU time over the S idle seconds, in % of
  one core; "(0 watchers)": the same over S seconds before the first subscription
  (the server's own background work, e.g. idle workers looking for work).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench.echo_server import FANOUT_SERVICE  # noqa: E402
from bench.harness import (  # noqa: E402
    command_line,
    load1,
    load_note,
    machine,
    markdown_table,
    percentile,
    print_table,
    ratio,
    scratch_dir,
    write_section,
)
from bench.processes import Serve, echo_server  # noqa: E402
from genrpc.imagegen.v1 import generation_pb2 as g  # noqa: E402
from genrpc.imagegen.v1 import generation_pb2_grpc  # noqa: E402

WATCH = f"/{FANOUT_SERVICE}/Watch"
PUBLISH = f"/{FANOUT_SERVICE}/Publish"
WATCH_GENERATION = "/imagegen.v1.GenerationService/WatchGeneration"
Metadata = tuple[tuple[str, str], ...]
# What `imagegen serve` uses with its default limits (unary + streams + headroom).
PENDING_CALLS = 1000 + 20000 + 1000
# The core options both servers set: without them, the core cancels calls of a burst
# of subscriptions beyond 1,000 waiting to be picked up.
CORE_OPTIONS = (
    ("grpc.server.max_pending_requests", PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * PENDING_CALLS),
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- measuring a server process ---


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB."""
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE_KIB


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class Result:
    """One server's figures for one W."""

    subscribed: int
    subscribe_seconds: float
    delivered: int
    p50_ms: float
    p99_ms: float
    ack_ms: float
    kib_per_watcher: float
    idle_cpu_percent: float
    no_watcher_cpu_percent: float


async def measure(
    address: str,
    pid: int,
    watchers: int,
    channels: int,
    idle: float,
    method: str,
    request: bytes,
    metadata: tuple[tuple[str, str], ...],
    trigger: object,
) -> Result:
    """Subscribe ``watchers`` streams, sit idle, trigger one change, time its delivery."""
    chans = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        for chan in chans:
            await chan.channel_ready()
        calls = [chan.unary_stream(method) for chan in chans]
        # The server's own background work (workers looking for work, ...) with no watcher.
        cpu_before = cpu_seconds(pid)
        await asyncio.sleep(idle)
        no_watcher_cpu = (cpu_seconds(pid) - cpu_before) / idle * 100
        rss_before = rss_kib(pid)
        failures: Counter[str] = Counter()
        first_times: list[float] = []
        next_times: list[float] = []
        subscribed = asyncio.Event()
        delivered = asyncio.Event()

        async def watch(i: int) -> None:
            call = calls[i % channels](request, metadata=metadata)
            try:
                if await call.read() == grpc.aio.EOF:
                    return
                first_times.append(time.perf_counter())
                if len(first_times) == watchers:
                    subscribed.set()
                if await call.read() == grpc.aio.EOF:
                    return
                next_times.append(time.perf_counter())
                if len(next_times) == watchers:
                    delivered.set()
                while await call.read() != grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as error:
                failures[f"{error.code().name}: {error.details()}"] += 1
                return
            finally:
                call.cancel()

        started = time.perf_counter()
        tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(subscribed.wait(), 120)
            if len(first_times) < watchers:
                print(
                    f"only {len(first_times)} subscribed; failures {dict(failures)}",
                    file=sys.stderr,
                )
            subscribe_seconds = (max(first_times) if first_times else started) - started
            await asyncio.sleep(2.0)  # let the server settle before reading its memory
            rss_after = rss_kib(pid)
            cpu_before = cpu_seconds(pid)
            await asyncio.sleep(idle)
            idle_cpu = (cpu_seconds(pid) - cpu_before) / idle * 100
            triggered = time.perf_counter()
            await trigger()  # type: ignore[operator]
            acknowledged = time.perf_counter()
            with suppress(TimeoutError):
                await asyncio.wait_for(delivered.wait(), 120)
            if len(next_times) < len(first_times):
                print(
                    f"only {len(next_times)} delivered; failures {dict(failures)}", file=sys.stderr
                )
            latencies = sorted((t - triggered) * 1000 for t in next_times)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return Result(
            subscribed=len(first_times),
            subscribe_seconds=subscribe_seconds,
            delivered=len(next_times),
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            ack_ms=(acknowledged - triggered) * 1000,
            kib_per_watcher=(rss_after - rss_before) / max(len(first_times), 1),
            idle_cpu_percent=idle_cpu,
            no_watcher_cpu_percent=no_watcher_cpu,
        )
    finally:
        for chan in chans:
            await chan.close()


def imagegen_row(
    watchers: int, channels: int, idle: float, extra_env: dict[str, str], profile: Path | None
) -> tuple[Result, int]:
    """The imagegen figures for one W (and the size of its snapshot message)."""
    base = scratch_dir("imagegen-bench-watch-")
    env = {
        "IMAGEGEN_DATABASE_URL": "",
        "IMAGEGEN_S3_ENDPOINT": "",
        "IMAGEGEN_MAX_STREAMS_PER_KEY": str(max(watchers, 2000)),
        "IMAGEGEN_MAX_OPEN_STREAMS": str(max(watchers, 20000)),
        **extra_env,
    }
    server = Serve(base / "data", env).start()
    profiler = None
    if profile is not None:
        # A sampling profile of the whole run (needs py-spy in the environment).
        profiler = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--format",
                "raw",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
        )
    try:
        return asyncio.run(
            drive_imagegen(server.address, server.pid, server.api_key(), watchers, channels, idle)
        )
    finally:
        server.stop()
        if profiler is not None:
            profiler.wait(30)


async def seed_generation(
    stub: generation_pb2_grpc.GenerationServiceStub, md: Metadata
) -> tuple[str, int]:
    """A generation run to its end, and the size of the snapshot event a new watcher gets."""
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a lighthouse at dusk"), metadata=md
    )
    snapshot_size = 0
    async for event in stub.WatchGeneration(g.WatchGenerationRequest(id=created.id), metadata=md):
        snapshot_size = event.ByteSize()  # the stream ends once it is SUCCESS
    return created.id, snapshot_size


def follow_request(generation_id: str) -> bytes:
    """A WatchGeneration(follow=true) request, as the raw bytes the streams send."""
    return g.WatchGenerationRequest(id=generation_id, follow=True).SerializeToString()


async def drive_imagegen(
    address: str, pid: int, key: str, watchers: int, channels: int, idle: float
) -> tuple[Result, int]:
    """Make one SUCCESS generation, then measure W follow-watchers on it."""
    md = (("x-api-key", key),)
    async with grpc.aio.insecure_channel(address) as control:
        stub = generation_pb2_grpc.GenerationServiceStub(control)
        generation_id, snapshot_size = await seed_generation(stub, md)

        async def regenerate() -> None:
            await stub.RegenerateGeneration(
                g.RegenerateGenerationRequest(id=generation_id), metadata=md
            )

        result = await measure(
            address,
            pid,
            watchers,
            channels,
            idle,
            WATCH_GENERATION,
            follow_request(generation_id),
            md,
            regenerate,
        )
    return result, snapshot_size


def bare_row(watchers: int, channels: int, idle: float, size: int) -> Result:
    """The bare fan-out server's figures for one W (bench/echo_server.py --fanout)."""
    with echo_server(b"x" * size, fanout=True, options=CORE_OPTIONS) as bare:
        return asyncio.run(drive_bare(bare.address, bare.pid, watchers, channels, idle))


async def drive_bare(address: str, pid: int, watchers: int, channels: int, idle: float) -> Result:
    """Measure W subscribers of the bare fan-out server."""
    async with grpc.aio.insecure_channel(address) as control:
        await asyncio.wait_for(control.channel_ready(), 30)
        publish = control.unary_unary(PUBLISH)

        async def trigger() -> None:
            await publish(b"")

        return await measure(address, pid, watchers, channels, idle, WATCH, b"", (), trigger)


def cells(watchers: int, bare: Result, imagegen: Result) -> list[str]:
    """One table row."""
    return [
        f"{watchers:,}",
        f"{imagegen.subscribed:,}",
        f"{imagegen.subscribe_seconds:.1f}",
        f"{bare.subscribe_seconds:.1f}",
        f"{imagegen.p50_ms:,.0f}",
        f"{imagegen.p99_ms:,.0f}",
        f"{bare.p50_ms:,.0f}",
        f"{bare.p99_ms:,.0f}",
        f"{ratio(imagegen.p99_ms, bare.p99_ms):.2f}",
        f"{imagegen.ack_ms:,.0f}",
        f"{bare.ack_ms:,.0f}",
        f"{imagegen.kib_per_watcher:.1f}",
        f"{bare.kib_per_watcher:.1f}",
        f"{imagegen.idle_cpu_percent:.2f}",
        f"{imagegen.no_watcher_cpu_percent:.2f}",
        f"{bare.idle_cpu_percent:.2f}",
        f"{imagegen.delivered:,}",
    ]


COLUMNS = [
    "W",
    "subscribed",
    "subscribe s",
    "bare subscribe s",
    "delivery p50 ms",
    "delivery p99 ms",
    "bare p50 ms",
    "bare p99 ms",
    "p99 / bare",
    "change ack ms",
    "bare ack ms",
    "KiB/watcher",
    "bare KiB/watcher",
    "idle CPU %",
    "idle CPU % (0 watchers)",
    "bare idle CPU %",
    "delivered",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--watchers", default="1000,5000,10000")
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the imagegen server (e.g. PYTHONPATH=<an older checkout>)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the imagegen server")
    args = parser.parse_args()
    load_start = load1()
    rows = []
    for watchers in [int(w) for w in args.watchers.split(",")]:
        extra = dict(item.split("=", 1) for item in args.server_env)
        imagegen, size = imagegen_row(watchers, args.channels, args.idle, extra, args.profile)
        bare = bare_row(watchers, args.channels, args.idle, size)
        rows.append(cells(watchers, bare, imagegen))
        print_table("WatchGeneration fan-out vs bare grpc.aio", COLUMNS, rows)
    note = load_note(load_start)
    if args.markdown:
        section = "\n".join(
            [
                "## WatchGeneration fan-out vs bare grpc.aio",
                "",
                f"`{command_line()}` — W WatchGeneration(follow=true) streams on one "
                "generation of an `imagegen serve` process (SQLite + local images), next to "
                "the bare grpc.aio fan-out server `bench/echo_server.py --fanout` (its own "
                "process too; an asyncio.Queue per subscriber, no interceptor) with the same "
                "W, channels and message size, measured one after the other in the same run; "
                f"{args.channels} channels from one client process; {args.idle:g} s idle "
                "before the change. Delivery is timed from just before RegenerateGeneration "
                "(bare: Publish) to each stream's next message; change ack is how long that "
                "call took to answer (for imagegen, the Regenerate's own write: the part of "
                "every delivery spent before the change exists); memory is the growth of the "
                "server's RSS over W; idle CPU is the server's CPU time while every stream "
                "sat idle, in % of one core, next to the same before any stream opened. "
                "The Regenerate also runs the generation in the server (its 4 default "
                "workers), so each imagegen stream gets 3 events (PENDING, PROCESSING, "
                "SUCCESS) in quick succession and the server draws a picture meanwhile; "
                "the bare server sends one. Both servers set the same two core options "
                "(grpc.server.max_pending_requests and its hard limit), without which the "
                "core cancels part of a burst of subscriptions.",
                "",
                f"{machine()}; {note}.",
                "",
                *markdown_table(COLUMNS, rows),
                "",
            ]
        )
        write_section(args.markdown, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
