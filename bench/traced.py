"""Run a Python program with tracemalloc on; each SIGUSR1 snapshots its Python heap.

Usage: python bench/traced.py --out PATH [--frames N] -- (-m MODULE | SCRIPT) [ARGS...]

From the second SIGUSR1 on, PATH gets the growth since the previous snapshot as JSON:
``{"total": bytes, "parts": {part: bytes}}``, where a part is the first frame (innermost
first) of each allocation's traceback that lies in this repository (``server/...``,
``bench/...``), or "grpc.aio and asyncio" when none does (grpc's Cython call objects
are allocated from loop callbacks, with no frame of ours). bench/watch_memory.py reads it.
"""

from __future__ import annotations

import argparse
import json
import runpy
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = "grpc.aio and asyncio"


def part_of(traceback: tracemalloc.Traceback) -> str:
    """The repository file an allocation is charged to (innermost frame first)."""
    for frame in reversed(traceback):  # a Traceback lists the oldest frame first
        name = frame.filename
        if name.startswith(str(ROOT)) and "/.venv/" not in name:
            return Path(name).relative_to(ROOT).as_posix()
    return OUTSIDE


def main() -> None:
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args(sys.argv[1:split])
    out, frames, rest = args.out, args.frames, sys.argv[split + 1 :]
    tracemalloc.start(frames)
    snapshots: list[tracemalloc.Snapshot] = []

    def snapshot(signum: int, frame: FrameType | None) -> None:
        ignore = tracemalloc.Filter(False, tracemalloc.__file__)
        snapshots.append(tracemalloc.take_snapshot().filter_traces([ignore]))
        if len(snapshots) < 2:
            return
        parts: Counter[str] = Counter()
        total = 0
        for stat in snapshots[-1].compare_to(snapshots[-2], "traceback"):
            parts[part_of(stat.traceback)] += stat.size_diff
            total += stat.size_diff
        written = out.with_suffix(".part")
        written.write_text(json.dumps({"total": total, "parts": dict(parts)}))
        written.replace(out)  # whole, or not there yet

    signal.signal(signal.SIGUSR1, snapshot)
    run_program(rest)


def run_program(program: list[str]) -> None:
    """Run ``program`` (``-m MODULE [ARGS...]`` or ``SCRIPT [ARGS...]``) in this process,
    as ``python`` would, with the repository importable."""
    sys.path.insert(0, str(ROOT))
    if program[0] == "-m":
        sys.argv = [program[1], *program[2:]]
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = program
        runpy.run_path(program[0], run_name="__main__")


if __name__ == "__main__":
    main()
