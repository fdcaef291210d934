"""Benchmark the request path against a bare grpc.aio server, each in its own process.

Usage: python bench/fast_path.py [--backends sqlite,postgres] [--callers 32] [--seconds S]
       [--count 1000] [--delay 2] [--workers 256] [--rows get,rest,gateway,create,engine]
       [--engine-runs 3] [--profile DIR] [--markdown PATH] [--server-root DIR] [--timeline DIR]

For each backend (SQLite + local directory; embedded PostgreSQL + SeaweedFS S3) it runs
real `imagegen serve` processes and, beside them, the bare echo server of
bench/echo_server.py (answering with the bytes GetGeneration returns); the load comes
from this process, CALLERS calls in flight over one channel. The echo calls do a Get's
client work (the request serialized, the same metadata, the reply parsed as a
Generation), so only the server differs; the REST calls parse their JSON replies. Each
run also prints the CPU per call of the server, of PostgreSQL's processes and of the
load generator, which share the cores.
Rows, same run:

- GetGeneration QPS / echo QPS (each caller reads a SUCCESS generation of its own; workers off);
- on PostgreSQL, the floor: QPS of the echo server asking the database ``SELECT 1``
  before each reply (``bench/echo_server.py --postgres``) / echo QPS, and Get QPS / that;
- CreateGeneration QPS with workers off / echo QPS;
- REST ``GET /api/v1/generations/{id}`` QPS through the gateway / gRPC GetGeneration QPS
  (CALLERS keep-alive HTTP/1.1 connections of bench.harness.HttpConnection), through
  `imagegen serve`'s own HTTP port ("rest": its gateway processes, IMAGEGEN_GATEWAY_PROCESSES,
  set it to 0 in this process's environment for the gateway inside the server) and through
  `imagegen gateway` started apart in front of the same server ("gateway"); the server
  CPU of both is every process's that served the read;
- COUNT generations created by CALLERS at once against a generator that waits DELAY s
  (a hosted model's latency), WORKERS running at once: achieved throughput (server
  timestamps, first create_time to last complete_time, so the creates are inside it) /
  ideal throughput, which runs ceil(COUNT / WORKERS) rounds of DELAY s and nothing else
  (issue 13 reckons COUNT x DELAY / WORKERS, 2.3 % less at 1,000 / 256: the markdown says
  what each ratio would be against that).
  Completion is watched with two counting List calls every 0.5 s, not a Get per
  generation, so the watching costs the server under test next to nothing. Also printed:
  the server's CPU per generation (from /proc, creates, polling and its drawing process
  included), the run time beyond the delay, and when each round of WORKERS runs started
  and ended.

``--rows engine`` runs the engine row alone (with one echo run). ``--engine-runs N`` runs
it N times (3), each on a fresh server and database, and reports the run with the median
span, with the range of all (the first run alone is profiled). ``--rounds N`` sets how
many rounds the QPS rows run (3; the table reports medians). ``--profile DIR``
writes py-spy raw profiles of the Get, REST Get, Create and engine runs of the imagegen process
(the engine run's of the thread holding the GIL only). ``--server-root DIR`` runs
`imagegen serve` from another checkout (``python -m server`` with DIR as its working
directory, this venv's Python), to compare two versions A/B in the same minutes;
``--timeline DIR`` writes the engine row's (its first run's) create/start/complete times
per generation. The engine row's server draws in one process (``IMAGEGEN_DRAW_PROCESSES=1``);
set IMAGEGEN_DRAW_PROCESSES=0 in this process's environment to draw on threads instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run from a checkout, where the project is not necessarily installed.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.harness import (
    Call,
    HttpConnection,
    Run,
    command_line,
    console,
    drive,
    load1,
    load_note,
    machine,
    markdown_table,
    percentile,
    print_table,
    python_speed,
    ratio,
    today,
    wakeup_round_trip,
    write_section,
)
from bench.processes import (
    ECHO_METHOD,
    Backend,
    Serve,
    backends,
    echo_server,
    fresh_env,
    gateway,
    serving,
    warm_bucket,
)
from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.events.listener import asyncpg_dsn

SECTION_HEADING = "## Request path vs bare grpc.aio (server and baseline in their own processes)"
TERMINAL = (g.GENERATION_STATUS_SUCCESS, g.GENERATION_STATUS_FAILED)
QUIET = {"IMAGEGEN_LOG_LEVEL": "warning", "IMAGEGEN_RATE_LIMIT_PER_MINUTE": "0"}


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


async def _wait_terminal(
    stub: generation_pb2_grpc.GenerationServiceStub,
    ids: Sequence[str],
    md: tuple[tuple[str, str], ...],
    callers: int,
    budget: float,
) -> list[g.Generation]:
    """Every generation once it is SUCCESS or FAILED (polled by ``callers`` at a time)."""
    done: dict[str, g.Generation] = {}
    deadline = time.monotonic() + budget
    while len(done) < len(ids) and time.monotonic() < deadline:
        todo = [i for i in ids if i not in done]
        queue = list(todo)

        async def poll(queue: list[str] = queue) -> None:
            while queue:
                gid = queue.pop()
                reply = await stub.GetGeneration(g.GetGenerationRequest(id=gid), metadata=md)
                if reply.status in TERMINAL:
                    done[gid] = reply

        await asyncio.gather(*(poll() for _ in range(min(callers, len(todo)))))
        if len(done) < len(ids):
            await asyncio.sleep(0.5)
    return list(done.values())


async def _finished_count(
    stub: generation_pb2_grpc.GenerationServiceStub, md: tuple[tuple[str, str], ...]
) -> int:
    """How many of the project's generations are SUCCESS or FAILED (two small List calls)."""
    totals = await asyncio.gather(
        *(
            stub.ListGenerations(g.ListGenerationsRequest(status=status, limit=1), metadata=md)
            for status in TERMINAL
        )
    )
    return sum(reply.total for reply in totals)


async def _wait_all_finished(
    stub: generation_pb2_grpc.GenerationServiceStub,
    ids: set[str],
    md: tuple[tuple[str, str], ...],
    budget: float,
) -> list[g.Generation]:
    """The project's finished generations among ``ids``, once all are (or ``budget`` passed).

    The engine row's project holds only these, so two counting calls every 0.5 s tell when
    all are done (polling each generation would load the server under test with thousands
    of reads); then one paged listing reads their server timestamps.
    """
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if await _finished_count(stub, md) >= len(ids):
            break
        await asyncio.sleep(0.5)
    finished: list[g.Generation] = []
    for status in TERMINAL:
        token = ""
        while True:
            page = await stub.ListGenerations(
                g.ListGenerationsRequest(status=status, limit=100, page_token=token), metadata=md
            )
            finished += [x for x in page.generations if x.id in ids]
            token = page.next_page_token
            if not token:
                break
    return finished


async def _seed(address: str, key: str, count: int) -> list[g.Generation]:
    """``count`` SUCCESS generations, one for each caller of the read rows to read."""
    md = (("x-api-key", key),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        ids = []
        for _ in range(count):
            created = await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a lighthouse at dusk, benchmark"), metadata=md
            )
            ids.append(created.id)
        done = await _wait_terminal(stub, ids, md, count, 120)
        if len(done) < count or any(x.status != g.GENERATION_STATUS_SUCCESS for x in done):
            raise RuntimeError(f"seeding: {len(done)} of {count} generations finished")
        return sorted(done, key=lambda x: ids.index(x.id))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live child processes (`imagegen serve`'s gateway
    processes, with IMAGEGEN_GATEWAY_PROCESSES), and of children it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                total += tree_cpu_seconds(int(child))
    return total


async def analyze(database_url: str) -> None:
    """ANALYZE the benchmark's database: what autovacuum does within a minute of a create
    run's 10,000 new generations in a deployment, before the next rows are measured.

    Without it the next round's Gets could run a plan PostgreSQL cached on a held
    reader while the table had a few pages (a sequential scan, 0.5 ms of database CPU a
    Get at 11,000 rows): the minute after a bulk load, not the request path's steady
    state (docs/benchmarks.md, session 13)."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


def database_cpu_seconds() -> float:
    """CPU time used so far by this machine's PostgreSQL processes (0 without any).

    It shares the cores with the server and the load generator, so its share per call
    is printed next to theirs (processes that ended since are not counted)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(entry.name))
        except OSError:
            continue  # it ended meanwhile
    return total


class Profiler:
    """A py-spy sampling profile of one process for one run (raw format), when asked."""

    def __init__(self, directory: Path | None, pid: int, *, native: bool = False) -> None:
        self.directory = directory
        self.pid = pid
        # Also sample C and Cython frames (grpc's cygrpc, httptools, the json encoder).
        self.native = native

    def record(
        self, name: str, seconds: float, *, gil: bool = False
    ) -> subprocess.Popen[bytes] | None:
        """Start recording (``gil``: only the thread holding the GIL, that is where the
        process's Python CPU goes, leaving out threads waiting in fsync or a C library)."""
        if self.directory is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        command = [str(py_spy), "record", "-p", str(self.pid), "-r", "200", "-f", "raw"]
        # py-spy reads native stacks only while the process is stopped (blocking mode):
        # that slows it, so a native profile's CPU figures are not comparable.
        command += ["--native"] if self.native else ["--nonblocking"]
        command += ["-d", str(max(1, int(seconds)))]
        command += ["--gil", "-o"] if gil else ["-o"]
        command += [str(self.directory / f"{name}.txt")]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _requests(
    address: str,
    echo: str,
    base_url: str,
    key: str,
    gids: Sequence[str],
    callers: int,
    seconds: float,
    pids: dict[str, int],
    profiler: Profiler,
    rows: frozenset[str],
    floor: str | None = None,
    rounds: int = 3,
    gateway_url: str | None = None,
    database_url: str | None = None,
) -> Rounds:
    """``rounds`` rounds of echo, Get, REST Get and Create, then echo once more, each run
    ``seconds`` long (after a warm-up); with ``floor`` (an echo server that asks
    PostgreSQL once per call), that one too, after the Get; with ``gateway_url`` (an
    `imagegen gateway` process in front of the server), REST Gets through it as well.

    Also the CPU time per call of the processes that answered each run (``pids``: the
    echo server's for the echo runs, the floor's, imagegen's for the others, and
    imagegen's plus the gateway process's for the REST Gets through that), in milliseconds.
    """
    md = (("x-api-key", key),)
    async with (
        grpc.aio.insecure_channel(address) as channel,
        grpc.aio.insecure_channel(echo) as echo_channel,
        grpc.aio.insecure_channel(floor or echo) as floor_channel,  # unused without a floor
    ):

        def http_connections(url: str) -> list[HttpConnection]:
            host, _, port = url.removeprefix("http://").partition(":")
            return [HttpConnection(host, int(port), {"X-API-Key": key}) for _ in range(callers)]

        connections = http_connections(base_url)
        # REST through `imagegen gateway` in its own process (the "gateway" row).
        own_connections = http_connections(gateway_url) if gateway_url else []
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        # The same client work as a Get: the request serialized from the message, the
        # same metadata, the reply (GetGeneration's bytes) parsed into a Generation. Only
        # the server differs, so the load generator, which shares the machine's cores,
        # costs the same per call in both runs.
        echo_call = echo_channel.unary_unary(
            ECHO_METHOD,
            request_serializer=g.GetGenerationRequest.SerializeToString,
            response_deserializer=g.Generation.FromString,
        )
        floor_call = floor_channel.unary_unary(
            ECHO_METHOD,
            request_serializer=g.GetGenerationRequest.SerializeToString,
            response_deserializer=g.Generation.FromString,
        )
        # Each caller reads a generation of its own, as clients polling their own work
        # do: the server cannot answer many calls with one read of the same row.
        requests = [g.GetGenerationRequest(id=gids[i % len(gids)]) for i in range(callers)]

        def caller(method: Any, request: g.GetGenerationRequest) -> Call:
            """One caller's call: ``method`` (echo, the floor or Get) with its request."""

            async def once() -> object:
                return await method(request, metadata=md)

            return once

        def rest_caller(connection: HttpConnection, gid: str) -> Call:
            async def rest_once() -> object:
                status, body = await connection.get(f"/api/v1/generations/{gid}")
                if status != 200:
                    raise RestError(f"HTTP {status}: {body[:200]!r}")
                # Parsed, as the gRPC Get's reply is: each client does a real client's work.
                return json.loads(body)

            return rest_once

        async def create_once() -> object:
            return await stub.CreateGeneration(
                g.CreateGenerationRequest(prompt="a lighthouse at dusk, benchmark"), metadata=md
            )

        own_calls = [
            rest_caller(c, r.id)
            for c, r in zip(own_connections, requests[: len(own_connections)], strict=True)
        ]
        plan: list[tuple[str, list[Call]]] = [
            ("get", [caller(stub.GetGeneration, r) for r in requests]),
            *([("floor", [caller(floor_call, r) for r in requests])] if floor else []),
            ("rest", [rest_caller(c, r.id) for c, r in zip(connections, requests, strict=True)]),
            *([("gateway", own_calls)] if own_calls else []),
            ("create", [create_once] * callers),
        ]
        echo_calls = [caller(echo_call, r) for r in requests]
        result = Rounds()

        async def measure(name: str, calls: list[Call], label: str) -> None:
            await drive(calls, min(1.0, seconds / 3))  # warm-up
            if name == "echo":
                answering = [pids["echo"]]
            elif name == "gateway":
                answering = [pids["imagegen"], pids["gateway"]]
            else:
                answering = [pids.get(name, pids["imagegen"])]
            # The first round's runs are profiled (a profile slows the run it samples);
            # their labels are the rows' names, the later rounds' carry a number.
            first = label == name
            profile = (
                profiler.record(name, seconds)
                if first and name in ("get", "rest", "create")
                else None
            )
            before = sum(map(tree_cpu_seconds, answering))
            database_before = database_cpu_seconds()
            load_before = time.process_time()
            run = await drive(calls, seconds, failures=(grpc.aio.AioRpcError, RestError, OSError))
            per_call = 1000 / max(1, run.calls)
            server = per_call * (sum(map(tree_cpu_seconds, answering)) - before)
            database = max(0.0, database_cpu_seconds() - database_before)
            result.add(name, run, server)
            if name == "create" and database_url:
                await analyze(database_url)
            if name in ("rest", "gateway"):
                # The gateway closes a keep-alive connection idle for 5 s: the next
                # round's REST run connects afresh (in its warm-up).
                for connection in connections if name == "rest" else own_connections:
                    await connection.close()
            if profile is not None:
                profile.wait(30)
            console.print(
                f"  {label}: {run.qps:,.0f} QPS ({run.errors} errors), "
                f"server CPU {server:.3f} ms/call; PostgreSQL {per_call * database:.3f}, "
                f"load generator {per_call * (time.process_time() - load_before):.3f}"
            )

        for number in range(rounds):
            await measure("echo", echo_calls, f"echo{number}")
            for name, calls in plan:
                row = "get" if name == "floor" else name  # the floor is the Get row's
                if row in rows:
                    await measure(name, calls, name if number == 0 else f"{name}{number}")
        await measure("echo", echo_calls, f"echo{rounds}")
        for connection in [*connections, *own_connections]:
            await connection.close()
    return result


class RestError(Exception):
    """A REST call that did not answer 200."""


@dataclass(slots=True)
class Rounds:
    """Each row's runs and server CPU per call (ms), round by round; ``echo`` has one run
    before each round and one after the last.

    A ratio is taken within each round (the row's QPS over the mean of the echo runs
    just before and after it) and the median of the rounds' ratios reported: the
    machine's speed drifts from minute to minute, and a row compared with an echo run
    minutes away would measure the drift.
    """

    runs: dict[str, list[Run]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, run: Run, cpu: float) -> None:
        self.runs.setdefault(name, []).append(run)
        self.cpu.setdefault(name, []).append(cpu)

    def __contains__(self, name: str) -> bool:
        return name in self.runs

    def qps(self, name: str) -> float:
        """The median of the row's QPS."""
        return statistics.median(run.qps for run in self.runs[name])

    def ms(self, name: str) -> float:
        """The median of the row's server CPU per call."""
        return statistics.median(self.cpu[name])

    def echo_around(self, number: int) -> float:
        """The mean QPS of the echo runs before and after round ``number``."""
        echo = self.runs["echo"]
        return statistics.mean([echo[number].qps, echo[number + 1].qps])

    def ratios(self, name: str, base: str = "echo") -> list[float]:
        """The row's QPS over ``base``'s, round by round."""
        out = []
        for number, run in enumerate(self.runs[name]):
            baseline = self.echo_around(number) if base == "echo" else self.runs[base][number].qps
            out.append(ratio(run.qps, baseline))
        return out

    def over(self, name: str, base: str = "echo") -> float:
        """The median of the row's per-round ratios to ``base``."""
        return statistics.median(self.ratios(name, base))


@dataclass(frozen=True, slots=True)
class EngineRun:
    """What the engine row measured: spans from the server's timestamps, and its CPU."""

    span: float  # first create_time to last complete_time
    create_span: float
    done: int
    failed: int
    cpu_seconds: float  # the imagegen process's, from the first create to the last finish
    rounds: list[tuple[float, float, float]]  # per round: first start, last start, last end
    # Per generation, seconds after the first create: (create, start, complete).
    timeline: list[tuple[float, float, float]]


def _rounds(
    timeline: Sequence[tuple[float, float, float]], workers: int
) -> list[tuple[float, float, float]]:
    """Per round of ``workers`` runs (in start order): its first and last start and its
    last completion."""
    if workers <= 0:
        return []
    runs = sorted((start, end) for _, start, end in timeline)
    out = []
    for first in range(0, len(runs), workers):
        chunk = runs[first : first + workers]
        out.append((chunk[0][0], chunk[-1][0], max(end for _, end in chunk)))
    return out


async def _throughput(
    address: str, key: str, count: int, callers: int, budget: float, pid: int, workers: int
) -> EngineRun:
    """Create ``count`` generations and wait until all are finished."""
    md = (("x-api-key", key),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        queue = list(range(count))
        ids: list[str] = []

        async def creator() -> None:
            while queue:
                n = queue.pop()
                reply = await stub.CreateGeneration(
                    g.CreateGenerationRequest(prompt=f"a lighthouse at dusk, number {n}"),
                    metadata=md,
                )
                ids.append(reply.id)

        cpu_before = tree_cpu_seconds(pid)
        await asyncio.gather(*(creator() for _ in range(callers)))
        finished = await _wait_all_finished(stub, set(ids), md, budget)
        cpu = tree_cpu_seconds(pid) - cpu_before
    if not finished:
        return EngineRun(math.nan, math.nan, 0, 0, cpu, [], [])
    origin = min(_seconds(x.create_time) for x in finished)
    timeline = sorted(
        (
            _seconds(x.create_time) - origin,
            _seconds(x.start_time) - origin,
            _seconds(x.complete_time) - origin,
        )
        for x in finished
    )
    failed = sum(1 for x in finished if x.status != g.GENERATION_STATUS_SUCCESS)
    return EngineRun(
        max(end for _, _, end in timeline),
        max(create for create, _, _ in timeline),
        len(finished),
        failed,
        cpu,
        _rounds(timeline, workers),
        timeline,
    )


@dataclass(frozen=True, slots=True)
class Launch:
    """Starts `imagegen serve` from this checkout, or from ``root`` (an A/B comparison)."""

    root: Path | None

    def serving(
        self, data_dir: Path, env: dict[str, str], *, http: bool = False
    ) -> AbstractContextManager[Serve]:
        if self.root is None:
            return serving(data_dir, env, http=http)
        return serving(data_dir, env, http=http, root=self.root.resolve())


def run_backend(backend: Backend, args: argparse.Namespace, base: Path) -> dict[str, object]:
    console.rule(backend.label)
    env = {**fresh_env(backend), **QUIET}
    launcher = Launch(args.server_root)
    name = backend.label.split()[0].lower()
    data = base / name / "requests"
    with launcher.serving(data, {**env, "IMAGEGEN_WORKERS": "8"}) as server:
        seeded = asyncio.run(_seed(server.address, server.api_key(), args.callers))
    # The same store again, workers off: reads see SUCCESS generations, creates stay PENDING.
    # On PostgreSQL, the floor: the echo server asking the same database once per call.
    database_url = env.get("IMAGEGEN_DATABASE_URL") or None
    with (
        launcher.serving(data, {**env, "IMAGEGEN_WORKERS": "0"}, http=True) as server,
        echo_server(seeded[0].SerializeToString()) as echo,
        (
            echo_server(seeded[0].SerializeToString(), postgres=database_url)
            if database_url
            else contextlib.nullcontext(None)
        ) as floor,
        gateway(server) if "gateway" in args.rows else contextlib.nullcontext(None) as own,
    ):
        profile_dir = args.profile / backend.label.split()[0].lower() if args.profile else None
        measured = asyncio.run(
            _requests(
                server.address,
                echo.address,
                server.base_url,
                server.api_key(),
                [x.id for x in seeded],
                args.callers,
                args.seconds,
                {
                    "imagegen": server.pid,
                    "echo": echo.pid,
                    **({"floor": floor.pid} if floor else {}),
                    **({"gateway": own.pid} if own else {}),
                },
                Profiler(profile_dir, server.pid, native=args.native),
                args.rows,
                floor.address if floor else None,
                args.rounds if args.rows & {"get", "rest", "gateway", "create"} else 0,
                own.base_url if own else None,
                database_url,
            )
        )
    result: dict[str, object] = {"label": backend.label, "rounds": measured}
    if "engine" not in args.rows:
        return result
    ideal_span = _ideal_span(args)
    runs = [
        _engine_run(args, launcher, base / name / f"engine{n}", backend, name, ideal_span, n)
        for n in range(args.engine_runs)
    ]
    # The run with the median span stands for the row (each starts a fresh server on a
    # fresh database); every run's span is listed beside it.
    by_span = sorted(runs, key=lambda run: run[0].span if run[0].done else math.inf)
    engine, speeds = by_span[len(by_span) // 2]  # of two, the longer
    return {
        **result,
        "span": engine.span,
        "spans": [run.span for run, _ in runs],
        "create_span": engine.create_span,
        "ideal_span": ideal_span,
        "done": engine.done,
        "failed": engine.failed,
        "host": speeds,
    }


def _draw_processes() -> str:
    """IMAGEGEN_DRAW_PROCESSES of the engine row's server: this process's, or 1."""
    return os.environ.get("IMAGEGEN_DRAW_PROCESSES", "1")


def _engine_run(
    args: argparse.Namespace,
    launcher: Launch,
    data: Path,
    backend: Backend,
    name: str,
    ideal_span: float,
    number: int,
) -> tuple[EngineRun, tuple[float, float]]:
    """One engine run on a fresh server and store: printed, and the host's loop around it."""
    env = {
        **fresh_env(backend),
        **QUIET,
        "IMAGEGEN_WORKERS": str(args.workers),
        "IMAGEGEN_GENERATOR_DELAY_SECONDS": str(args.delay),
        # A hosted model's picture costs this process nothing: draw a thumbnail, in a
        # process of its own (its CPU is counted with the server's, as a child's).
        "IMAGEGEN_GENERATOR_MAX_SIDE": "64",
        "IMAGEGEN_DRAW_PROCESSES": _draw_processes(),
    }
    if "IMAGEGEN_S3_BUCKET" in env:
        warm_bucket(env)  # a new bucket's one-time stall is SeaweedFS's, not the engine's
    # Only the first run is profiled or written as a timeline.
    profile_dir = args.profile / name if args.profile and number == 0 else None
    # The host's speed moves within minutes (on these machines a pure-Python loop took
    # 0.17 s and, a few minutes later, 0.45): measured on both sides of the engine row, it
    # tells a run in a slow spell from a slow engine.
    speed_before = python_speed()
    with launcher.serving(data, env) as server:
        started = time.monotonic()
        profile = Profiler(profile_dir, server.pid, native=args.native).record(
            "engine", ideal_span + 4, gil=True
        )
        engine = asyncio.run(
            _throughput(
                server.address,
                server.api_key(),
                args.count,
                args.callers,
                args.budget,
                server.pid,
                args.workers,
            )
        )
        wall = time.monotonic() - started
        if profile is not None:
            profile.wait(60)
    speed_after = python_speed()
    console.print(
        f"  {args.count} x {args.delay:g} s: {engine.done} done ({engine.failed} failed) in "
        f"{engine.span:.1f} s (creates {engine.create_span:.1f} s; ideal {ideal_span:.1f} s; "
        f"wall {wall:.1f} s): {ideal_span / engine.span:.2f} of ideal; server CPU "
        f"{1000 * engine.cpu_seconds / max(1, engine.done):.2f} ms/generation; host loop "
        f"{speed_before:.2f} s before, {speed_after:.2f} s after"
    )
    beyond = [complete - start - args.delay for _, start, complete in engine.timeline]
    if beyond:
        console.print(
            "    run time beyond the delay (start to complete), p50 / p90 / max: "
            f"{percentile(beyond, 50):.3f} / {percentile(beyond, 90):.3f} / {max(beyond):.3f} s"
        )
    if args.timeline and number == 0:
        args.timeline.mkdir(parents=True, exist_ok=True)
        lines = ["create,start,complete"]
        lines += [f"{a:.4f},{b:.4f},{c:.4f}" for a, b, c in engine.timeline]
        (args.timeline / f"{name}.csv").write_text("\n".join(lines) + "\n")
    for n, (first, last, end) in enumerate(engine.rounds):
        console.print(
            f"    round {n + 1}: starts {first:.2f}-{last:.2f} s, last finish {end:.2f} s"
        )
    return engine, (speed_before, speed_after)


ROWS: frozenset[str] = frozenset({"get", "rest", "gateway", "create", "engine"})


def _ideal_span(args: argparse.Namespace) -> float:
    """The engine row's ideal: ceil(COUNT / WORKERS) rounds of DELAY (none without workers)."""
    return math.ceil(args.count / args.workers) * args.delay if args.workers else math.inf


def _ideal_note(args: argparse.Namespace) -> str:
    """How the engine row's ideal is reckoned, and what its ratio would be against the
    plain throughput of the workers (the figure issue 13 quotes)."""
    if not args.workers:
        return "none (no workers)"
    whole = _ideal_span(args)
    steady = args.count * args.delay / args.workers
    return (
        f"{whole / args.delay:.0f} rounds of {args.delay:g} s, {whole:.1f} s "
        f"(no schedule of {args.workers} "
        f"slots runs {args.count:,} such runs in less); against {args.workers} runs per "
        f"{args.delay:g} s without rounds ({steady:.2f} s) each ratio would be "
        f"{steady / whole:.3f} of the one printed"
    )


def _rows(text: str) -> frozenset[str]:
    chosen = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = chosen - ROWS
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"rows are some of {', '.join(sorted(ROWS))}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--callers", type=int, default=32, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each QPS run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the QPS rows (medians are reported)"
    )
    parser.add_argument("--count", type=int, default=1000, help="generations in the engine row")
    parser.add_argument("--delay", type=float, default=2.0, help="generator delay, seconds")
    parser.add_argument("--workers", type=int, default=256, help="IMAGEGEN_WORKERS for it")
    parser.add_argument("--budget", type=float, default=180.0, help="engine row time limit")
    parser.add_argument(
        "--engine-runs",
        type=int,
        default=3,
        help="engine runs, each on a fresh server (the median span is reported)",
    )
    parser.add_argument(
        "--rows",
        type=_rows,
        default=ROWS,
        help="comma-separated rows to run, of " + ",".join(sorted(ROWS)) + " (default: all)",
    )
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory for py-spy raw profiles of the Get, REST Get, Create and engine runs",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="with --profile: sample native (C, Cython) frames too",
    )
    parser.add_argument(
        "--server-root", type=Path, help="run `imagegen serve` from this checkout instead"
    )
    parser.add_argument(
        "--timeline", type=Path, help="directory for the engine row's create/start/complete CSV"
    )
    args = parser.parse_args()
    speed, wakeup = python_speed(), wakeup_round_trip()
    console.print(
        f"host: a pure-Python loop of 5,000,000 additions takes {speed:.2f} s, "
        f"a wake-up round trip between two processes {wakeup:.0f} us"
    )
    load_start = load1()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp,
        backends(tuple(args.backends.split(","))) as started,
    ):
        for backend in started.values():
            results.append(run_backend(backend, args, Path(tmp)))
    columns = [
        "backend",
        "echo QPS",
        "Get QPS",
        "Get / echo",
        "floor / echo; Get / floor",
        "Create QPS",
        "Create / echo",
        "server CPU ms: echo / Get / Create",
        "REST Get QPS",
        "REST / gRPC",
        "REST / gRPC via `imagegen gateway`",
        "REST CPU ms: serve / via `imagegen gateway`",
        f"{args.count} x {args.delay:g} s: s (creates; ideal)",
        "achieved / ideal",
    ]
    rows = []
    for r in results:
        measured = r["rounds"]
        assert isinstance(measured, Rounds)

        def qps(name: str, m: Rounds = measured) -> str:
            return f"{m.qps(name):,.0f}" if name in m else "-"

        def over(name: str, base: str = "echo", m: Rounds = measured) -> str:
            return f"{m.over(name, base):.2f}" if name in m and base in m else "-"

        def ms(name: str, m: Rounds = measured) -> str:
            return f"{m.ms(name):.2f}" if name in m else "-"

        engine = ["-", "-"]
        if "span" in r:
            span, ideal = float(r["span"]), float(r["ideal_span"])  # type: ignore[arg-type]
            complete = r["done"] == args.count
            spans = sorted(r["spans"])  # type: ignore[call-overload]
            engine = [
                f"{span:.1f} ({float(r['create_span']):.1f}; {ideal:.1f})"  # type: ignore[arg-type]
                + ("" if complete else f", {r['done']} done"),
                (f"{ideal / span:.2f}" if complete else "incomplete")
                + (
                    f" ({ideal / spans[-1]:.2f}-{ideal / spans[0]:.2f})"
                    if len(spans) > 1 and all(math.isfinite(x) for x in spans)
                    else ""
                ),
            ]
        floor = "-"
        if "floor" in measured:
            floor = f"{over('floor')}; {over('get', 'floor')}"
        rows.append(
            [
                str(r["label"]),
                qps("echo"),
                qps("get"),
                over("get"),
                floor,
                qps("create"),
                over("create"),
                f"{ms('echo')} / {ms('get')} / {ms('create')}",
                qps("rest"),
                over("rest", "get"),
                over("gateway", "get"),
                f"{ms('rest')} / {ms('gateway')}",
                *engine,
            ]
        )
    print_table("Request path vs bare grpc.aio (own processes)", columns, rows)
    if args.markdown:
        lines = [
            SECTION_HEADING,
            "",
            f"`.venv/bin/{command_line()}`",
            "",
            f"{machine()}. {load_note(load_start)}. Run at {today()}. A pure-Python loop "
            f"of 5,000,000 additions took {speed:.2f} s and a wake-up round trip between two "
            f"processes {wakeup:.0f} us (`bench.harness.python_speed`, `wakeup_round_trip`: "
            "how fast the host was that day).",
            "",
            f"{args.callers} calls in flight over one channel from the benchmark process; "
            "`imagegen serve` and the echo server each in their own process; every QPS run "
            f"lasts {args.seconds:g} s after a warm-up. The QPS rows run in {args.rounds} rounds, "
            "each between two echo runs; a row's ratio is the median of its rounds' (its QPS "
            "over the mean of the echo runs around it, or over the Get run of its round), "
            "and QPS and CPU are medians too. The echo calls do a Get's client work (the request "
            "serialized, the same metadata, the reply parsed as a Generation) and the REST "
            "calls parse their JSON: the load generator shares the cores, and does a real "
            "client's work on both sides of each ratio. The server runs with "
            "`IMAGEGEN_LOG_LEVEL=warning` (no log line per call; at the default `info` each "
            "call writes one) and `IMAGEGEN_RATE_LIMIT_PER_MINUTE=0` (one API key makes all "
            f"the load). Engine row: {args.workers} workers "
            f"(`IMAGEGEN_WORKERS`), generator delay {args.delay:g} s, pictures drawn at 64 px "
            "(`IMAGEGEN_GENERATOR_MAX_SIDE`: a hosted model's picture costs the server no "
            f"drawing) with `IMAGEGEN_DRAW_PROCESSES={_draw_processes()}` (above 0: drawn "
            "in the server's child processes, their CPU counted with the server's); "
            "completion is watched with two counting ListGenerations calls every 0.5 s; "
            f"its ideal is {_ideal_note(args)}. "
            "Server CPU is the CPU time (user + system, from /proc) the answering processes "
            "used during the run, per call: the echo server's for echo, imagegen's with its "
            "child processes (its gateway processes, `IMAGEGEN_GATEWAY_PROCESSES`, 1, and "
            "drawing process) for Get, Create, REST and the engine, and with the `imagegen "
            "gateway` process too for "
            "REST through that. On PostgreSQL, the floor is the echo server asking the same "
            "database `SELECT 1` through asyncpg on one of four connections held open before "
            "each reply (`bench/echo_server.py --postgres`): the least any server that reads "
            "PostgreSQL once per call pays on this machine; and the database is analyzed "
            "after each Create run (what autovacuum does within a minute of its 10,000 new "
            "rows) before the next rows are measured.",
            "",
            *markdown_table(columns, rows),
            "",
        ]
        around = [
            f"{r['label']} {r['host'][0]:.2f} s before, {r['host'][1]:.2f} s after"  # type: ignore[index]
            for r in results
            if "host" in r
        ]
        if around:
            lines += [f"The host's loop around each engine row: {'; '.join(around)}.", ""]
        write_section(args.markdown, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
