"""Where a watch stream's server memory goes: imagegen next to the bare fan-out, part by part.

Usage: python bench/watch_memory.py [--watchers 2000,10000] [--channels 8] [--frames 6]
       [--try-env NAME=VALUE ...] [--try-option NAME=INT ...] [--markdown PATH]

Both servers of bench/watch_fanout.py (`imagegen serve` with W follow-watchers on one
generation, and bench/echo_server.py --fanout with W subscribers, the same core options)
run twice each, every run in a process of its own:

- plain (under bench/malloc_stats.py): the growth of the server's resident memory
  over W open streams, per stream, and of glibc malloc's bytes in use and free (held
  but not handed out: fragmentation), and what ``malloc_trim(0)`` then gives back;
- under bench/traced.py (tracemalloc): the growth of the Python heap over the same W
  streams, per stream, charged to the repository file that allocated it (the first
  frame of ours in each allocation's traceback), or to "grpc.aio and asyncio" when no
  frame is ours (grpc's Cython call objects, its per-call task).

Resident memory minus the traced Python heap is what Python cannot see: grpc's C core
(per call: its arena, the HTTP/2 stream) and the allocators' overhead. Both are
measured after a warm-up of 50 streams, so lazily built things are not charged.

``--try-env`` runs both servers again (plain) with an environment variable set, once
per value: the allocator (MALLOC_ARENA_MAX, GLIBC_TUNABLES, which sets glibc's mallopt
parameters at start, PYTHONMALLOC) or grpc's core (GRPC_EXPERIMENTS). ``--try-option``
runs the bare server again with one more grpc core option.
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Plain:
    """A plain run's figures, in KiB per stream."""

    rss: float
    malloc_in_use: float  # what glibc malloc handed out and was not freed
    malloc_free: float  # what malloc holds without handing it out (fragmentation)
    trimmed: float  # resident memory malloc_trim(0) gave back, after the W streams


def written_lines(out: Path) -> list[str]:
    """The lines written to ``out`` so far."""
    return out.read_text().splitlines() if out.exists() else []


async def signalled(pid: int, signum: int, out: Path, lines: int) -> list[str]:
    """Signal ``pid``, wait until ``out`` has ``lines`` lines (its answer), return them."""
    os.kill(pid, signum)
    for _ in range(int(TRACE_SECONDS * 10)):
        written = await asyncio.to_thread(written_lines, out)
        if len(written) >= lines:
            return written
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server wrote no figures to {out}")


async def hold_streams(
    address: str,
    pid: int,
    watchers: int,
    channels: int,
    method: str,
    request: bytes,
    md: watch_fanout.Metadata,
    trace_out: Path | None,
    malloc_out: Path | None = None,
) -> Plain:
    """Open W streams (after a warm-up) and return the server's growth per stream; with
    ``trace_out``, signal the traced server before and after, and wait for its figures;
    with ``malloc_out``, the same for bench/malloc_stats.py's."""
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
        if malloc_out is not None:
            await signalled(pid, signal.SIGUSR2, malloc_out, 1)
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
        rss = (after - before) / watchers
        if malloc_out is None:
            return Plain(rss, 0.0, 0.0, 0.0)
        written = await signalled(pid, signal.SIGUSR2, malloc_out, 2)
        first, second = (json.loads(line) for line in written[:2])
        per_stream = 1024 * watchers
        return Plain(
            rss,
            (second["in_use"] - first["in_use"]) / per_stream,
            (second["free"] - first["free"]) / per_stream,
            (second["resident"] - second["resident_trimmed"]) / per_stream,
        )
    finally:
        for call in calls:
            call.cancel()
        for chan in chans:
            await chan.close()


def launcher_for(trace: tuple[Path, int] | None, malloc_out: Path | None) -> tuple[str, ...]:
    """The command prefix that runs a server under bench/traced.py (``trace``) or
    bench/malloc_stats.py (``malloc_out``), or nothing."""
    if trace is not None:
        out, frames = trace
        return (str(ROOT / "bench" / "traced.py"), "--out", str(out), "--frames", str(frames))
    if malloc_out is not None:
        return (str(ROOT / "bench" / "malloc_stats.py"), "--out", str(malloc_out))
    return ()


def with_separator(launcher: tuple[str, ...]) -> tuple[str, ...]:
    """``launcher`` ended by the ``--`` before the program it runs (nothing stays nothing)."""
    return (*launcher, "--") if launcher else ()


def imagegen_run(
    watchers: int, channels: int, trace: tuple[Path, int] | None, env: dict[str, str]
) -> Plain:
    """One `imagegen serve` process with W follow-watchers; its growth per stream."""
    base = harness.scratch_dir("imagegen-bench-memory-")
    malloc_out = None if trace else base / "malloc.jsonl"
    serve_env = {
        "IMAGEGEN_DATABASE_URL": "",
        "IMAGEGEN_S3_ENDPOINT": "",
        "IMAGEGEN_MAX_STREAMS_PER_KEY": str(watchers + WARM_UP),
        **env,
    }
    launcher = with_separator(launcher_for(trace, malloc_out))
    server = Serve(base / "data", serve_env, launcher=launcher).start()
    try:
        return asyncio.run(drive_imagegen(server, watchers, channels, trace, malloc_out))
    finally:
        server.stop()


async def drive_imagegen(
    server: Serve,
    watchers: int,
    channels: int,
    trace: tuple[Path, int] | None,
    malloc_out: Path | None = None,
) -> Plain:
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
        malloc_out,
    )


def bare_run(
    watchers: int,
    channels: int,
    trace: tuple[Path, int] | None,
    env: dict[str, str],
    extra: tuple[tuple[str, int], ...] = (),
) -> Plain:
    """One bare fan-out server with W subscribers (``extra``: more core options); its
    growth per stream."""
    options = (*watch_fanout.CORE_OPTIONS, *extra)
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-memory-") as tmp:
        malloc_out = None if trace else Path(tmp) / "malloc.jsonl"
        launcher = with_separator(launcher_for(trace, malloc_out))
        with echo_server(
            b"x" * 300, fanout=True, options=options, launcher=launcher, env=env
        ) as bare:
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
                    malloc_out,
                )
            )


Run = Callable[[int, int, "tuple[Path, int] | None", dict[str, str]], Plain]


def breakdown(
    watchers: int, channels: int, frames: int, run: Run
) -> tuple[Plain, float, dict[str, float]]:
    """The plain run's figures, traced Python KiB per stream, and the traced parts in
    bytes/stream."""
    plain = run(watchers, channels, None, {})
    with tempfile.TemporaryDirectory(prefix="imagegen-traced-") as tmp:
        out = Path(tmp) / "trace.json"
        run(watchers, channels, (out, frames), {})
        figures = json.loads(out.read_text())
    parts = {part: size / watchers for part, size in figures["parts"].items()}
    return plain, figures["total"] / watchers / 1024, parts


def env_setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as an environment variable (the value may hold ``=``)."""
    name, _, value = text.partition("=")
    return name, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--watchers", default="2000", help="W, comma-separated")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="traceback depth of tracemalloc")
    parser.add_argument(
        "--try-env",
        type=env_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable to measure both servers with (repeatable)",
    )
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
    sizes = [int(w) for w in args.watchers.split(",")]
    summary_columns = [
        "server",
        "W",
        "RSS KiB/stream",
        "Python heap KiB/stream",
        "rest KiB/stream",
        "malloc in use KiB/stream",
        "malloc free KiB/stream",
        "malloc_trim(0) gives back KiB/stream",
    ]
    summary: list[list[str]] = []
    part_tables: list[tuple[int, list[list[str]]]] = []
    part_columns = ["part", "imagegen bytes/stream", "bare bytes/stream"]
    for w in sizes:
        ours, ours_py, ours_parts = breakdown(w, args.channels, args.frames, imagegen_run)
        bare, bare_py, bare_parts = breakdown(w, args.channels, args.frames, bare_run)
        for name, plain, py in (("imagegen", ours, ours_py), ("bare", bare, bare_py)):
            summary.append(
                [
                    name,
                    f"{w:,}",
                    f"{plain.rss:.1f}",
                    f"{py:.1f}",
                    f"{plain.rss - py:.1f}",
                    f"{plain.malloc_in_use:.1f}",
                    f"{plain.malloc_free:.1f}",
                    f"{plain.trimmed:.2f}",
                ]
            )
        parts = sorted(
            set(ours_parts) | set(bare_parts),
            key=lambda part: -max(ours_parts.get(part, 0), bare_parts.get(part, 0)),
        )
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
            [
                NOT_TRACED,
                f"{(ours.rss - ours_py) * 1024:,.0f}",
                f"{(bare.rss - bare_py) * 1024:,.0f}",
            ]
        )
        part_tables.append((w, part_rows))
        harness.print_table(
            f"Server memory per watch stream, W={w:,}", summary_columns, summary[-2:]
        )
        harness.print_table(
            f"Python heap per stream, by the file that allocated it, W={w:,}",
            part_columns,
            part_rows,
        )

    env_columns = ["environment (both servers, plain runs)"] + [
        f"{server} RSS KiB/stream, W={w:,}" for w in sizes for server in ("imagegen", "bare")
    ]
    env_rows = [
        ["(none)"]
        + [
            row[2]
            for w in sizes
            for row in summary
            if row[1] == f"{w:,}" and row[0] in ("imagegen", "bare")
        ]
    ]
    for name, value in args.try_env:
        cells = [f"`{name}={value}`"]
        for w in sizes:
            setting = {name: value}
            cells.append(f"{imagegen_run(w, args.channels, None, setting).rss:.1f}")
            cells.append(f"{bare_run(w, args.channels, None, setting).rss:.1f}")
        env_rows.append(cells)
        harness.print_table("Environments and per-stream memory", env_columns, env_rows)
    option_columns = ["core option (bare server, plain run)"] + [
        f"RSS KiB/stream, W={w:,}" for w in sizes
    ]
    option_rows = [
        ["(only the common ones)"]
        + [row[2] for w in sizes for row in summary if row[:2] == ["bare", f"{w:,}"]]
    ]
    for name, option in args.try_option:
        option_rows.append(
            [f"`{name}={option}`"]
            + [f"{bare_run(w, args.channels, None, {}, ((name, option),)).rss:.1f}" for w in sizes]
        )
    if args.try_option:
        harness.print_table("Core options and per-stream memory", option_columns, option_rows)
    if args.markdown:
        section = [
            "## Watch memory per stream: where the bytes go",
            "",
            f"`{harness.command_line()}` — W streams (after 50 warm-up streams) on each "
            "server of the fan-out benchmark above, each in its own process: `imagegen "
            "serve` with WatchGeneration(follow=true) watchers, and bench/echo_server.py "
            "--fanout (an asyncio.Queue per subscriber, no interceptor), both with the "
            "same core options. RSS: resident memory growth over the W streams, per "
            "stream. malloc: glibc's mallinfo2 over all arenas before and after the W "
            "streams in the same run (bench/malloc_stats.py): bytes handed out and not "
            "freed (grpc's C core, and Python objects over 512 bytes; Python's small "
            "objects live in pymalloc's own mmapped arenas), bytes held but not handed "
            "out (fragmentation), and what malloc_trim(0) gave back afterwards. Python "
            "heap: tracemalloc's growth over the same W streams in a second run of each "
            "(bench/traced.py), charged to the first repository frame in each "
            "allocation's traceback, or to grpc.aio and asyncio when none is ours "
            "(grpc's Cython call objects and per-call task). The rest is what Python "
            "does not see: grpc's C core (per call: its arena, the HTTP/2 stream) and "
            "the allocators' overhead.",
            "",
            f"{harness.machine()}; {harness.load_note(load_start)}.",
            "",
            *harness.markdown_table(summary_columns, summary),
            "",
        ]
        for w, part_rows in part_tables:
            section += [
                f"Python heap by the file that allocated it, W = {w:,}:",
                "",
                *harness.markdown_table(part_columns, part_rows),
                "",
            ]
        if args.try_env:
            section += [
                "Allocator and grpc core settings, each set alone in the environment of "
                "both servers (plain runs):",
                "",
                *harness.markdown_table(env_columns, env_rows),
                "",
            ]
        if args.try_option:
            section += [
                "Core options that might size per-stream buffers, each tried alone on "
                "the bare server (plain runs):",
                "",
                *harness.markdown_table(option_columns, option_rows),
                "",
            ]
        harness.write_section(args.markdown, "\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
