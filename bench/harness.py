"""Shared benchmark parts: the load driver, percentiles, the machine, tables, docs sections."""

from __future__ import annotations

import asyncio
import atexit
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import sqlalchemy
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, removed when the benchmark exits (a PostgreSQL + S3 run
    leaves gigabytes of data and volume files otherwise)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


console = Console()
if not console.is_terminal:
    # Piped into a log, rich would assume 80 columns and cut the wide tables.
    console = Console(width=160)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always an observed value, never interpolated."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles in milliseconds."""

    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        """Summarise samples given in seconds."""
        ms = sorted(s * 1000 for s in seconds)
        return cls(
            percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), ms[-1] if ms else math.nan
        )


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``, infinite when the baseline is zero."""
    return value / baseline if baseline else math.inf


def nproc() -> int:
    """CPUs this process may run on (what ``nproc`` prints), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine and the versions that shape the figures."""
    return (
        f"{platform.system()} {platform.machine()} ({cpu_model()}), nproc {nproc()}, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}"
    )


def python_speed() -> float:
    """Seconds this host takes for a fixed pure-Python loop (best of three).

    The same kind of virtual machine is not the same speed every session (the echo
    server's QPS in bench/fast_path.py was 4,300-6,400 on most runs of 2026-12-02 and
    2,300-3,100 in its afternoon), and every figure moves with it. Written next to the
    results, it tells a reader which runs can be compared.
    """
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def wakeup_round_trip() -> float:
    """Microseconds for one byte to go to another process and back over a socket pair
    (the median of three runs of 20,000).

    Each gRPC call wakes a thread or a process several times (the poller, the event
    loop, the other side), so this, more than the Python speed, sets a day's QPS: on
    2026-12-02 the loop above ran at its usual speed while this took about 50 us and
    echo ran at half its morning's QPS.
    """
    runs = []
    for _ in range(3):
        ours, theirs = socket.socketpair()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            ours.close()
            for _ in range(20_000):
                theirs.recv(1)
                theirs.send(b"x")
            os._exit(0)
        theirs.close()
        started = time.perf_counter()
        for _ in range(20_000):
            ours.send(b"x")
            ours.recv(1)
        runs.append((time.perf_counter() - started) / 20_000 * 1e6)
        os.waitpid(child, 0)
        ours.close()
    return sorted(runs)[1]


def load1() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


def load_note(at_start: float) -> str:
    """The machine's load around a run: on a shared machine, neighbours move the figures."""
    return f"1-minute load average {at_start:.2f} at start, {load1():.2f} at end"


def today() -> str:
    """The UTC date and time of the run, to the minute."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    """How this process was started, as a reader would retype it from the repository root."""
    script = Path(sys.argv[0])
    with suppress(ValueError):  # a script outside the checkout keeps its own path
        script = script.resolve().relative_to(REPO_ROOT)
    return " ".join(["python", str(script), *sys.argv[1:]])


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1
) -> None:
    """Print a rich table; the first ``left`` columns are labels, the rest right-aligned figures."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        # A narrow terminal should wrap headings, not cut the figures.
        width = max((len(row[i]) for row in rows), default=0)
        table.add_column(column, justify="left" if i < left else "right", min_width=width)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def markdown_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1
) -> list[str]:
    """The same table as GitHub markdown lines."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def write_section(path: Path, section: str) -> None:
    """Replace the section of ``path`` whose ``## `` heading is the section's first line.

    Without such a section it is appended; every other section is kept as it was.
    """
    heading = section.splitlines()[0].rstrip()
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with a '## ' heading, not {heading!r}")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        path.write_text(text + separator + section, encoding="utf-8")
        return
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    tail = "".join(lines[end:])
    path.write_text(
        "".join(lines[:start]) + section + ("\n" + tail if tail else ""), encoding="utf-8"
    )


Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Run:
    """What one load did against one server: calls, failures, time and latency."""

    calls: int
    errors: int
    seconds: float
    latency: Latency

    @property
    def qps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


async def drive(
    calls: Sequence[Call],
    seconds: float,
    failures: tuple[type[BaseException], ...] = (grpc.aio.AioRpcError,),
) -> Run:
    """Each caller calls in a loop until ``seconds`` have passed; the last calls are awaited."""
    samples: list[float] = []
    errors = 0

    async def caller(call: Call, deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except failures:
                # Counted and shown, never raised: a benchmark reports, it does not judge.
                errors += 1
                continue
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(call, started + seconds) for call in calls))
    return Run(len(samples), errors, time.perf_counter() - started, Latency.of(samples))


class HttpConnection:
    """One HTTP/1.1 keep-alive connection that sends GETs and reads whole responses.

    A load generator, not a client library: it costs the benchmark process a small
    fraction of what httpx does per request, so the server, not the client, sets
    the pace. Responses must carry Content-Length (the gateway's JSON ones do).
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self._host = host
        self._port = port
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``: (status, body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        self._writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self._host}\r\n{self._headers}\r\n".encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        """Close it; the next ``get`` connects again."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()
