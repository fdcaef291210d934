"""Run a Python program whose glibc malloc figures are written on each SIGUSR2.

Usage: python bench/malloc_stats.py --out PATH -- (-m MODULE | SCRIPT) [ARGS...]

Each SIGUSR2 appends one JSON line to PATH: glibc's ``mallinfo2`` over all arenas
(``in_use``: bytes handed out by malloc and not freed; ``free``: bytes malloc holds
but has not handed out, its fragmentation and caches; ``mmapped``: large blocks)
and the process's resident memory; from the second signal on, also the resident
memory after ``malloc_trim(0)`` (what giving free pages back to the system saves).
Python's own small objects live in pymalloc's arenas, which are mmapped, not
malloc'd: resident growth minus malloc's is mostly them. bench/watch_memory.py reads it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench.traced import run_program  # noqa: E402

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (every field a size_t)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def resident_bytes() -> int:
    """This process's resident memory in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_BYTES


def main() -> None:
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(sys.argv[1:split])
    out, rest = args.out, sys.argv[split + 1 :]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    signals = 0

    def record(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        info = libc.mallinfo2()
        figures = {
            "in_use": info.uordblks + info.hblkhd,
            "free": info.fordblks,
            "mmapped": info.hblkhd,
            "resident": resident_bytes(),
        }
        if signals > 1:  # not before the streams: that would lower their baseline
            libc.malloc_trim(0)
            figures["resident_trimmed"] = resident_bytes()
        with out.open("a") as lines:
            lines.write(json.dumps(figures) + "\n")

    signal.signal(signal.SIGUSR2, record)
    run_program(rest)


if __name__ == "__main__":
    main()
