"""Benchmark Create → SUCCESS throughput and latency against the bare local generator.

Usage: python bench/create_to_success.py [--configs 1:1,1:8,2:8,4:32] [--count N]
       [--seconds S] [--baseline-count N] [--baseline-seconds S] [--aspect-ratio R]
       [--format F] [--timeout S] [--markdown PATH]

Each config is WORKERS:CALLERS. A fresh App (SQLite + local images, zero-delay local
generator) runs with WORKERS workers; CALLERS concurrent clients each create a
generation and follow it with WatchGeneration(since_revision = the created revision)
until it is SUCCESS or FAILED, then take the next, until COUNT generations are done or
SECONDS have passed (bounded in count and in time).
The baseline, measured in the same run, is the bare LocalGenerator rendering the same
prompts (as the template enhancer rewrites them) at the same size and format with
WORKERS concurrent calls and no service around it: the ratio of the two throughputs is
what claiming, storing, committing and notifying cost on top of drawing the picture.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run from a checkout, where the project is not necessarily installed.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench.harness import (
    Latency,
    command_line,
    console,
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
from server.domain.rules import ASPECT_RATIO_SIZES, DEFAULT_ENHANCEMENT_TEMPLATE
from server.engine.enhancers.template import TemplateEnhancer
from server.engine.generators.base import GenerateRequest
from server.engine.generators.local import MIME_TYPES, LocalGenerator

SECTION_HEADING = "## Create → SUCCESS (SQLite + local images)"
PROMPTS = (
    "a red fox in a snowy forest at dawn",
    "a lighthouse on a cliff at night with stars over a stormy sea",
    "minimalist product shot of a green glass bottle on white marble",
    "neon city street in the rain, reflections, a lone cyclist",
)
TERMINAL = (g.GENERATION_STATUS_SUCCESS, g.GENERATION_STATUS_FAILED)


@dataclass(frozen=True, slots=True)
class Config:
    """Workers in the service and concurrent callers creating generations."""

    workers: int
    callers: int

    @classmethod
    def parse(cls, text: str) -> Config:
        workers, _, callers = text.partition(":")
        config = cls(int(workers), int(callers or 1))
        if config.workers < 1 or config.callers < 1:
            raise ValueError(f"need workers >= 1 and callers >= 1, not {text!r}")
        return config


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one run measures, from the command line."""

    configs: list[Config]
    count: int  # generations per config at most
    seconds: float  # per config: no new generation starts after this
    baseline_count: int
    baseline_seconds: float
    aspect_ratio: str
    image_format: str
    bound: float  # per config: a run still going after this is cut short


@dataclass(frozen=True, slots=True)
class Row:
    """One config: the service's figures and the bare generator's next to them."""

    config: Config
    succeeded: int
    failed: int
    timed_out: bool
    seconds: float
    latency: Latency
    processing_ms: float  # median processing_time_ms: the worker's enhance + generate
    baseline_per_second: float

    @property
    def per_second(self) -> float:
        return self.succeeded / self.seconds if self.seconds else 0.0


async def create_to_success(
    config: Config, count: int, seconds: float, aspect_ratio: str, image_format: str, bound: float
) -> tuple[int, int, bool, float, list[float], list[int]]:
    """Run up to ``count`` generations, started within ``seconds``, through a fresh App.

    Latencies run from the create call to the terminal event. ``bound`` cuts the run
    short if the started generations do not finish in time.
    """
    latencies: list[float] = []
    processing: list[int] = []
    outcome = {"succeeded": 0, "failed": 0}
    async with running_app(
        workers=config.workers, generator_delay_seconds=0.0, generator_format=image_format
    ) as app:
        assert app.dev_api_key, "a fresh data directory always gets a dev project"
        metadata = (("x-api-key", app.dev_api_key),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)

            async def one(index: int) -> tuple[float, g.Generation | None]:
                began = time.perf_counter()
                created = await stub.CreateGeneration(
                    g.CreateGenerationRequest(
                        prompt=PROMPTS[index % len(PROMPTS)], aspect_ratio=aspect_ratio
                    ),
                    metadata=metadata,
                )
                watch = g.WatchGenerationRequest(id=created.id, since_revision=created.revision)
                async for event in stub.WatchGeneration(watch, metadata=metadata):
                    if event.generation.status in TERMINAL:
                        return time.perf_counter() - began, event.generation
                return time.perf_counter() - began, None

            # Warm-up (not counted): first queries, first picture, thread pool start.
            async with asyncio.timeout(bound):
                await asyncio.gather(*(one(i) for i in range(config.workers)))

            issued = 0

            async def caller() -> None:
                nonlocal issued
                while issued < count and time.perf_counter() < stop_issuing:
                    index = issued
                    issued += 1
                    elapsed, generation = await one(index)
                    if generation is not None and generation.status == g.GENERATION_STATUS_SUCCESS:
                        outcome["succeeded"] += 1
                        latencies.append(elapsed)
                        processing.append(generation.processing_time_ms)
                    else:
                        outcome["failed"] += 1

            started = time.perf_counter()
            stop_issuing = started + seconds
            timed_out = False
            try:
                async with asyncio.timeout(bound):
                    await asyncio.gather(*(caller() for _ in range(config.callers)))
            except TimeoutError:
                # A bound, not a verdict: report what finished in time.
                timed_out = True
            elapsed = time.perf_counter() - started
    return outcome["succeeded"], outcome["failed"], timed_out, elapsed, latencies, processing


async def bare_generator(
    workers: int, count: int, seconds: float, aspect_ratio: str, image_format: str, first: int
) -> tuple[int, float]:
    """LocalGenerator alone with ``workers`` concurrent calls: (pictures, seconds taken).

    Up to ``count`` pictures, started within ``seconds``; seeds start at ``first``.
    """
    width, height = ASPECT_RATIO_SIZES[aspect_ratio]
    enhancer = TemplateEnhancer()
    # The worker renders the enhanced prompt (auto_enhance defaults to on), so must we.
    prompts = [await enhancer.enhance(p, DEFAULT_ENHANCEMENT_TEMPLATE) for p in PROMPTS]
    generator = LocalGenerator(image_format=image_format)

    def request(index: int) -> GenerateRequest:
        return GenerateRequest(
            prompt=prompts[index % len(prompts)], width=width, height=height, seed=first + index
        )

    # Warm-up, as on the service side: one picture per worker.
    await asyncio.gather(*(generator.generate(request(i)) for i in range(workers)))
    issued = 0
    started = time.perf_counter()
    stop_issuing = started + seconds

    async def caller() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < stop_issuing:
            index = issued
            issued += 1
            await generator.generate(request(index))

    await asyncio.gather(*(caller() for _ in range(workers)))
    return issued, time.perf_counter() - started


async def measure(plan: Plan) -> list[Row]:
    rows = []
    for config in plan.configs:
        # Half right before and half right after each service run, rather than once per
        # worker count: on a shared machine the neighbours' load drifts, and a baseline
        # that brackets the run sees the same drift the run did.
        before = await bare_generator(
            config.workers,
            plan.baseline_count // 2 or 1,
            plan.baseline_seconds / 2,
            plan.aspect_ratio,
            plan.image_format,
            first=0,
        )
        succeeded, failed, timed_out, seconds, latencies, processing = await create_to_success(
            config, plan.count, plan.seconds, plan.aspect_ratio, plan.image_format, plan.bound
        )
        after = await bare_generator(
            config.workers,
            plan.baseline_count - plan.baseline_count // 2 or 1,
            plan.baseline_seconds / 2,
            plan.aspect_ratio,
            plan.image_format,
            first=before[0] + config.workers,
        )
        baseline = (before[0] + after[0]) / (before[1] + after[1])
        rows.append(
            Row(
                config=config,
                succeeded=succeeded,
                failed=failed,
                timed_out=timed_out,
                seconds=seconds,
                latency=Latency.of(latencies),
                processing_ms=statistics.median(processing) if processing else float("nan"),
                baseline_per_second=baseline,
            )
        )
    return rows


COLUMNS = (
    "workers",
    "callers",
    "done",
    "generations/s",
    "bare generator images/s",
    "× bare",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "worker ms (p50)",
)


def cells(row: Row) -> tuple[str, ...]:
    done = f"{row.succeeded}" + (f" ({row.failed} failed)" if row.failed else "")
    return (
        str(row.config.workers),
        str(row.config.callers),
        done + (" timed out" if row.timed_out else ""),
        f"{row.per_second:.1f}",
        f"{row.baseline_per_second:.1f}",
        f"{ratio(row.per_second, row.baseline_per_second):.2f}",
        f"{row.latency.p50:.0f}",
        f"{row.latency.p95:.0f}",
        f"{row.latency.p99:.0f}",
        f"{row.processing_ms:.0f}",
    )


def describe(plan: Plan) -> str:
    width, height = ASPECT_RATIO_SIZES[plan.aspect_ratio]
    return (
        f"Per row: up to {plan.count} generations started within {plan.seconds:g} s (after "
        f"one untimed warm-up generation per worker), {width}x{height} ({plan.aspect_ratio}) "
        f"{plan.image_format}, prompts auto-enhanced (the default), a fresh App and data "
        "directory. Latency runs from the CreateGeneration call to the SUCCESS event on "
        "WatchGeneration(since_revision = the created revision), one stream per generation. "
        "'worker ms' is the median processing_time_ms the service recorded (enhance and "
        "generate, inside the worker). The bare LocalGenerator renders the same prompts, size "
        "and format with as many concurrent calls as the row has workers, for "
        f"{plan.baseline_seconds:g} s per row (at most {plan.baseline_count} pictures), half "
        "right before and half right after the row's service run, so that both see the same "
        "load from the machine's neighbours. "
        "Client, service and generator share one process; pictures are drawn on the event "
        "loop's default thread pool in both cases."
    )


def markdown_section(rows: list[Row], text: str, machine_line: str) -> str:
    lines = [
        SECTION_HEADING,
        "",
        f"`{command_line()}` — generations/s from CreateGeneration to SUCCESS with the "
        "zero-delay local generator, next to the bare local generator's images/s measured "
        "in the same run.",
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
        "--configs",
        default="1:1,1:8,2:8,4:32",
        help="comma-separated WORKERS:CALLERS (default 1:1,1:8,2:8,4:32)",
    )
    parser.add_argument("--count", type=int, default=200, help="generations per config at most")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="per config: stop starting generations after"
    )
    parser.add_argument(
        "--baseline-count", type=int, default=200, help="bare generator pictures per row at most"
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=2.5,
        help="bare generator seconds per row (half before, half after the service run)",
    )
    parser.add_argument("--aspect-ratio", choices=sorted(ASPECT_RATIO_SIZES), default="1:1")
    parser.add_argument("--format", choices=sorted(MIME_TYPES), default="png")
    parser.add_argument(
        "--timeout", type=float, default=40.0, help="per config: cut a run short after this"
    )
    parser.add_argument("--markdown", type=Path, help=f"write a {SECTION_HEADING!r} section here")
    args = parser.parse_args()
    try:
        configs = [Config.parse(item) for item in args.configs.split(",")]
    except ValueError as error:
        parser.error(str(error))
    numbers = (args.count, args.seconds, args.baseline_count, args.baseline_seconds, args.timeout)
    if min(numbers) <= 0:
        parser.error("counts, seconds and --timeout must be positive")
    plan = Plan(
        configs=configs,
        count=args.count,
        seconds=args.seconds,
        baseline_count=args.baseline_count,
        baseline_seconds=args.baseline_seconds,
        aspect_ratio=args.aspect_ratio,
        image_format=args.format,
        bound=args.timeout,
    )

    quiet_logs()
    load_at_start = load1()
    started = time.perf_counter()
    rows = asyncio.run(measure(plan))
    text = describe(plan)
    print_table("Create → SUCCESS", COLUMNS, [cells(row) for row in rows], left=2)
    console.print(text)
    machine_line = f"{machine()}; {load_note(load_at_start)}."
    console.print(machine_line)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    if args.markdown:
        write_section(args.markdown, markdown_section(rows, text, machine_line))
        console.print(f"wrote {SECTION_HEADING!r} to {args.markdown}")


if __name__ == "__main__":
    main()
