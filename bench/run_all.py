"""Run every benchmark with its defaults and write docs/benchmarks.md afresh from that run.

Usage: python bench/run_all.py [--output PATH]

Each benchmark runs in its own interpreter (a fresh process: no thread pool, gRPC or
database state carried from one to the next) with ``--markdown PATH``, so each writes
its own section under a header that records the command, the machine and the date.
The file is started over, so it only ever holds figures from one run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

# Run from a checkout, where the project is not necessarily installed.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    DOCS_PATH,
    REPO_ROOT,
    command_line,
    console,
    load1,
    machine,
    today,
)

BENCH_DIR = Path(__file__).resolve().parent
# In the order they appear in the file; each one's defaults keep it well inside its limit.
BENCHMARKS = (
    ("local_generator.py", 120.0),
    ("fast_path.py", 900.0),
    ("replicas.py", 420.0),
    ("watch_fanout.py", 1800.0),
)


def preamble(load_at_start: float) -> str:
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by one command, from the repository root:",
            "",
            "```sh",
            f".venv/bin/{command_line()}",
            "```",
            "",
            f"- date: {today()}",
            f"- machine: {machine()}",
            f"- 1-minute load average when it started: {load_at_start:.2f}",
            "",
            "Every figure below comes from that one run and is written by the scripts, not by "
            "hand. Each benchmark measures its baseline in the same run and prints the ratio; "
            "none of them fails on timing, all traffic stays on 127.0.0.1, and each stops by "
            "itself within its count and time bounds. One section can be refreshed alone with "
            "the command it names plus `--markdown docs/benchmarks.md` (the date above then "
            "no longer covers it). The machine is shared: when the load average above is "
            "near or over nproc, the absolute figures are low and the ratios are the part "
            "to read.",
        ]
    )


def display(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it (it goes into the docs)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--output", type=Path, default=DOCS_PATH, help="markdown file to write (started over)"
    )
    args = parser.parse_args()
    output = display(args.output)

    started = time.perf_counter()
    # Started over, not patched: no section from an earlier run survives next to this one.
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(preamble(load1()) + "\n", encoding="utf-8")
    failed: list[str] = []
    for script, limit in BENCHMARKS:
        console.rule(script)
        command = [sys.executable, str(BENCH_DIR / script), "--markdown", output]
        sys.stdout.flush()  # our heading before the child's output, even through a pipe
        try:
            # Scripts name themselves in their sections; run them from the checkout root so
            # the paths they print are the ones a reader would type.
            done = subprocess.run(command, cwd=REPO_ROOT, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            # subprocess.run has killed and reaped it: nothing is left running.
            console.print(f"[red]{script} ran over {limit:g} s and was stopped[/red]")
            failed.append(script)
            continue
        if done.returncode != 0:
            console.print(f"[red]{script} exited with {done.returncode}[/red]")
            failed.append(script)
    console.rule()
    console.print(f"wrote {output} in {time.perf_counter() - started:.0f} s")
    if failed:
        # A crash is worth a non-zero status; slow figures never are.
        console.print(f"[red]no section from: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
