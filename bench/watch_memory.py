"""Where a watch stream's server memory goes: imagegen next to the bare fan-out, part by part.

Usage: python bench/watch_memory.py [--watchers 2000] [--channels 8] [--frames 6]
       [--markdown PATH]

Both servers of bench/watch_fanout.py (`imagegen serve` with W follow-watchers on one
generation, and bench/echo_server.py --fanout with W subscribers, the same core options)
run twice each, every run in a process of its own:

- plain: the growth of the server's resident memory over W open streams, per stream;
- under bench/traced.py (tracemalloc): the growth of the Python heap over the same W
  streams, per stream, charged to the repository file that allocated it (the first
  frame of ours in each allocation's traceback), or to "grpc.aio and asyncio" when no
  frame is ours (grpc's Cython call objects, its per-call task).

Resident memory minus the traced Python heap is what Python cannot see: grpc's C core
(per call: its arena, the HTTP/2 stream) and the allocators' overhead. Both are
measured after a warm-up of 50 streams, so lazily built things are not charged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench import harness, watch_fanout  # noqa: E402
from bench.echo_server import core_option  # noqa: E402
from bench.processes import Serve, echo_server  # noqa: E402
from bench.traced import OUTSIDE  # noqa: E402
from genrpc.imagegen.v1 import generation_pb2_grpc  # noqa: E402

WARM_UP = 50
SETTLE_SECONDS = 3.0
# tracemalloc writes its figures when signalled; this bounds the wait for them.
TRACE_SECONDS = 120.0
NOT_TRACED = "not seen by tracemalloc (grpc C core, allocator overhead)"


async def hold_streams(
    address: str,
    pid: int,
    watchers: int,
    channels: int,
    method: str,
    request: bytes,
    md: watch_fanout.Metadata,
    trace_out: Path | None,
) -> float:
    """Open W streams (after a warm-up) and return the server's RSS growth per stream in KiB;
    with ``trace_out``, signal the traced server before and after, and wait for its figures."""
    chans = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    calls = []
    try:
        for chan in chans:
            await chan.channel_ready()
        stubs = [chan.unary_stream(method) for chan in chans]

        async def opened(i: int) -> None:
            call = stubs[i % channels](request, metadata=md)
            calls.append(call)
            await call.read()  # the first message: the stream is fully set up

        await asyncio.gather(*(opened(i) for i in range(WARM_UP)))
        await asyncio.sleep(SETTLE_SECONDS)
        if trace_out is not None:
            os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(SETTLE_SECONDS)
        before = watch_fanout.rss_kib(pid)
        await asyncio.gather(*(opened(WARM_UP + i) for i in range(watchers)))
        await asyncio.sleep(SETTLE_SECONDS)
        after = watch_fanout.rss_kib(pid)
        if trace_out is not None:
            os.kill(pid, signal.SIGUSR1)
            for _ in range(int(TRACE_SECONDS)):
                if await asyncio.to_thread(trace_out.exists):
                    break
                await asyncio.sleep(1.0)
            else:
                raise RuntimeError("the traced server wrote no figures")
        return (after - before) / watchers
    finally:
        for call in calls:
            call.cancel()
        for chan in chans:
            await chan.close()


def traced_launcher(out: Path, frames: int) -> tuple[str, ...]:
    """The command prefix that runs a server under bench/traced.py."""
    return (str(ROOT / "bench" / "traced.py"), "--out", str(out), "--frames", str(frames), "--")


def imagegen_run(watchers: int, channels: int, trace: tuple[Path, int] | None) -> float:
    """One `imagegen serve` process with W follow-watchers; RSS KiB per stream."""
    base = Path(tempfile.mkdtemp(prefix="imagegen-bench-memory-"))
    env = {
        "IMAGEGEN_DATABASE_URL": "",
        "IMAGEGEN_S3_ENDPOINT": "",
        "IMAGEGEN_MAX_STREAMS_PER_KEY": str(watchers + WARM_UP),
    }
    launcher = traced_launcher(*trace) if trace else ()
    server = Serve(base / "data", env, launcher=launcher).start()
    try:
        return asyncio.run(drive_imagegen(server, watchers, channels, trace))
    finally:
        server.stop()


async def drive_imagegen(
    server: Serve, watchers: int, channels: int, trace: tuple[Path, int] | None
) -> float:
    md = (("x-api-key", server.api_key()),)
    async with grpc.aio.insecure_channel(server.address) as control:
        stub = generation_pb2_grpc.GenerationServiceStub(control)
        generation_id, _ = await watch_fanout.seed_generation(stub, md)
    return await hold_streams(
        server.address,
        server.pid,
        watchers,
        channels,
        watch_fanout.WATCH_GENERATION,
        watch_fanout.follow_request(generation_id),
        md,
        trace[0] if trace else None,
    )


def bare_run(
    watchers: int,
    channels: int,
    trace: tuple[Path, int] | None,
    extra: tuple[tuple[str, int], ...] = (),
) -> float:
    """One bare fan-out server with W subscribers (``extra``: more core options); RSS KiB
    per stream."""
    launcher = traced_launcher(*trace) if trace else ()
    options = (*watch_fanout.CORE_OPTIONS, *extra)
    with echo_server(b"x" * 300, fanout=True, options=options, launcher=launcher) as bare:
        return asyncio.run(
            hold_streams(
                bare.address,
                bare.pid,
                watchers,
                channels,
                watch_fanout.WATCH,
                b"",
                (),
                trace[0] if trace else None,
            )
        )


Run = Callable[[int, int, "tuple[Path, int] | None"], float]


def breakdown(
    watchers: int, channels: int, frames: int, run: Run
) -> tuple[float, float, dict[str, float]]:
    """RSS KiB per stream, traced Python KiB per stream, and the traced parts in bytes/stream."""
    rss = run(watchers, channels, None)
    with tempfile.TemporaryDirectory(prefix="imagegen-traced-") as tmp:
        out = Path(tmp) / "trace.json"
        run(watchers, channels, (out, frames))
        figures = json.loads(out.read_text())
    parts = {part: size / watchers for part, size in figures["parts"].items()}
    return rss, figures["total"] / watchers / 1024, parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--watchers", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="traceback depth of tracemalloc")
    parser.add_argument(
        "--try-option",
        type=core_option,
        action="append",
        default=[],
        metavar="NAME=INT",
        help="a grpc core option to measure on the bare server alone (repeatable)",
    )
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    load_start = harness.load1()
    w = args.watchers
    ours_rss, ours_py, ours_parts = breakdown(w, args.channels, args.frames, imagegen_run)
    bare_rss, bare_py, bare_parts = breakdown(w, args.channels, args.frames, bare_run)

    summary_columns = ["server", "RSS KiB/stream", "Python heap KiB/stream", "rest KiB/stream"]
    summary = [
        [name, f"{rss:.1f}", f"{py:.1f}", f"{rss - py:.1f}"]
        for name, rss, py in (("imagegen", ours_rss, ours_py), ("bare", bare_rss, bare_py))
    ]
    parts = sorted(
        set(ours_parts) | set(bare_parts),
        key=lambda part: -max(ours_parts.get(part, 0), bare_parts.get(part, 0)),
    )
    part_columns = ["part", "imagegen bytes/stream", "bare bytes/stream"]
    part_rows = [
        [
            f"`{part}`" if part != OUTSIDE else part,
            f"{ours_parts.get(part, 0):,.0f}",
            f"{bare_parts.get(part, 0):,.0f}",
        ]
        for part in parts
        if max(abs(ours_parts.get(part, 0)), abs(bare_parts.get(part, 0))) >= 16
    ]
    part_rows.append(
        [NOT_TRACED, f"{(ours_rss - ours_py) * 1024:,.0f}", f"{(bare_rss - bare_py) * 1024:,.0f}"]
    )
    option_columns = ["core option (bare server, plain run)", "RSS KiB/stream"]
    option_rows = [["(only the common ones)", f"{bare_rss:.1f}"]]
    for name, value in args.try_option:
        rss = bare_run(w, args.channels, None, ((name, value),))
        option_rows.append([f"`{name}={value}`", f"{rss:.1f}"])
    harness.print_table(f"Server memory per watch stream, W={w:,}", summary_columns, summary)
    harness.print_table(
        "Python heap per stream, by the file that allocated it", part_columns, part_rows
    )
    if args.try_option:
        harness.print_table("Core options and per-stream memory", option_columns, option_rows)
    if args.markdown:
        section = "\n".join(
            [
                "## Watch memory per stream: where the bytes go",
                "",
                f"`{harness.command_line()}` — W = {w:,} streams (after 50 warm-up streams) "
                "on each "
                "server of the fan-out benchmark above, each in its own process: `imagegen "
                "serve` with WatchGeneration(follow=true) watchers, and bench/echo_server.py "
                "--fanout (an asyncio.Queue per subscriber, no interceptor), both with the "
                "same core options. RSS: resident memory growth over the W streams, per "
                "stream. Python heap: tracemalloc's growth over the same W streams in a "
                "second run of each (bench/traced.py), charged to the first repository frame "
                "in each allocation's traceback, or to grpc.aio and asyncio when none is ours "
                "(grpc's Cython call objects and per-call task). The rest is what Python does "
                "not see: grpc's C core (per call: its arena, the HTTP/2 stream) and the "
                "allocators' overhead.",
                "",
                f"{harness.machine()}; {harness.load_note(load_start)}.",
                "",
                *harness.markdown_table(summary_columns, summary),
                "",
                *harness.markdown_table(part_columns, part_rows),
                "",
                *(
                    [
                        "Core options that might size per-stream buffers, each tried alone on "
                        "the bare server (plain runs, same W):",
                        "",
                        *harness.markdown_table(option_columns, option_rows),
                        "",
                    ]
                    if args.try_option
                    else []
                ),
            ]
        )
        harness.write_section(args.markdown, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
