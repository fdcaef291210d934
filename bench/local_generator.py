"""Benchmark the local generator per aspect ratio and format against a plain Pillow encode.

Usage: python bench/local_generator.py [--repeat N] [--markdown PATH]

Each row times LocalGenerator.generate (drawing and encoding, run on the loop's
default thread pool) and, as a baseline measured in the same run, the time Pillow
takes to encode a blank picture of the same size with the same encoder settings.
The ratio shows what the drawing costs on top of the unavoidable encode.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run from a checkout, where the project is not necessarily installed.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import PIL
from PIL import Image
from rich.console import Console
from rich.table import Table

from bench.harness import write_section
from server.domain.rules import ASPECT_RATIO_SIZES
from server.engine.generators.base import GenerateRequest
from server.engine.generators.local import MIME_TYPES, LocalGenerator, encode_picture

SECTION_HEADING = "## Local generator"
PROMPTS = (
    "a red fox in a snowy forest at dawn",
    "a lighthouse on a cliff at night with stars over a stormy sea",
    "minimalist product shot of a green glass bottle on white marble",
    "neon city street in the rain, reflections, a lone cyclist",
)


@dataclass(frozen=True, slots=True)
class Row:
    """Timings for one aspect ratio and format, in milliseconds per picture."""

    aspect_ratio: str
    image_format: str
    width: int
    height: int
    median_ms: float
    p95_ms: float
    baseline_median_ms: float
    mean_kib: float

    @property
    def ratio(self) -> float:
        return self.median_ms / self.baseline_median_ms if self.baseline_median_ms else math.inf


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile: with few samples, an observed value, not an interpolation."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def time_baseline(width: int, height: int, image_format: str, repeat: int) -> float:
    """Median ms for Pillow to create and encode a blank picture of this size."""
    samples = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        encode_picture(Image.new("RGB", (width, height)), image_format)
        samples.append((time.perf_counter() - started) * 1000)
    # The first run pays for encoder set-up; the generator's warm-up is also discarded.
    return statistics.median(samples[1:])


async def time_generator(
    aspect_ratio: str, image_format: str, repeat: int
) -> tuple[list[float], list[int]]:
    width, height = ASPECT_RATIO_SIZES[aspect_ratio]
    generator = LocalGenerator(image_format=image_format)
    samples: list[float] = []
    sizes: list[int] = []
    for index in range(repeat + 1):
        request = GenerateRequest(
            prompt=PROMPTS[index % len(PROMPTS)], width=width, height=height, seed=index
        )
        started = time.perf_counter()
        picture = await generator.generate(request)
        elapsed = (time.perf_counter() - started) * 1000
        if index:
            samples.append(elapsed)
            sizes.append(len(picture.content))
    return samples, sizes


async def measure(repeat: int) -> list[Row]:
    rows = []
    for aspect_ratio, (width, height) in ASPECT_RATIO_SIZES.items():
        for image_format in MIME_TYPES:
            samples, sizes = await time_generator(aspect_ratio, image_format, repeat)
            rows.append(
                Row(
                    aspect_ratio=aspect_ratio,
                    image_format=image_format,
                    width=width,
                    height=height,
                    median_ms=statistics.median(samples),
                    p95_ms=p95(samples),
                    baseline_median_ms=time_baseline(width, height, image_format, repeat),
                    mean_kib=statistics.fmean(sizes) / 1024,
                )
            )
    return rows


COLUMNS = (
    "aspect",
    "size",
    "format",
    "median ms",
    "p95 ms",
    "blank encode ms",
    "× baseline",
    "mean KiB",
)


def cells(row: Row) -> tuple[str, ...]:
    return (
        row.aspect_ratio,
        f"{row.width}x{row.height}",
        row.image_format,
        f"{row.median_ms:.1f}",
        f"{row.p95_ms:.1f}",
        f"{row.baseline_median_ms:.1f}",
        f"{row.ratio:.1f}",
        f"{row.mean_kib:.0f}",
    )


def environment(repeat: int) -> str:
    return (
        f"Python {platform.python_version()}, Pillow {PIL.__version__}, "
        f"{platform.machine()} with {os.cpu_count()} CPUs; {repeat} timed pictures per row "
        "after one warm-up, sequential, on the event loop's default thread pool."
    )


def markdown_section(rows: list[Row], repeat: int) -> str:
    lines = [
        SECTION_HEADING,
        "",
        "`python bench/local_generator.py` — milliseconds per picture for "
        "`LocalGenerator.generate` (draw and encode), next to the time Pillow takes to encode "
        "a blank picture of the same size with the same settings, measured in the same run.",
        "",
        environment(repeat),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--repeat", type=int, default=15, help="timed pictures per row (default 15)"
    )
    parser.add_argument(
        "--markdown", type=Path, help="write a '## Local generator' section into this file"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    started = time.perf_counter()
    rows = asyncio.run(measure(args.repeat))
    table = Table(title="LocalGenerator: ms per picture")
    for i, column in enumerate(COLUMNS):
        # A narrow terminal should wrap headings, not cut the figures.
        table.add_column(
            column, justify="left" if i < 3 else "right", min_width=len(cells(rows[0])[i])
        )
    for row in rows:
        table.add_row(*cells(row))
    console = Console()
    console.print(table)
    console.print(environment(args.repeat))
    console.print(f"total {time.perf_counter() - started:.1f} s")
    if args.markdown:
        write_section(args.markdown, markdown_section(rows, args.repeat))
        console.print(f"wrote {SECTION_HEADING!r} to {args.markdown}")


if __name__ == "__main__":
    main()
