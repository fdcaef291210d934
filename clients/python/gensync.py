"""Write the SDK's blocking client (sync.py) from its asyncio one (aio.py); or check it.

Usage: python clients/python/gensync.py [--check]

The logic of every call exists once, in imagegen_client/aio.py. sync.py is
generated, not committed (.gitignore): setup.py runs this before every build
(wheel, sdist, editable install) and scripts/venv.sh runs it for the checkout.
unasync drops ``async``/``await`` and maps the asyncio names to their blocking
twins; the few lines with no token-for-token twin (grpc.aio, the three-argument
Generator, the docstrings) are rewritten below. ``--check`` exits 1 if the
sync.py on disk is not what aio.py gives (tests/clients/test_sdk_packaging.py
runs it too).
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import unasync

PACKAGE = Path(__file__).resolve().parent / "imagegen_client"
SOURCE = PACKAGE / "aio.py"
TARGET = PACKAGE / "sync.py"

HEADER = "# Generated from aio.py by clients/python/gensync.py. DO NOT EDIT.\n"

# Whole names: unasync replaces NAME tokens (and strings that are just a name).
NAMES = {
    "AsyncClient": "Client",
    "asyncio": "time",  # `import asyncio`, `asyncio.sleep(delay)`
    "aclosing": "closing",
}

# Text with no token-for-token twin: (pattern, replacement), applied in order.
REWRITES: list[tuple[str, str]] = [
    # The module docstring and the asyncio-only lint waiver above the imports.
    (
        r'\A"""(?s:.*?)"""\n\n(?:# .*\n)*',
        '"""The blocking imagegen client: every RPC as a method, plus generate, wait, watch '
        'and files."""\n\n',
    ),
    (r"grpc\.aio\.", "grpc."),
    # grpc.aio's close takes a grace period (None: cancel at once); the blocking one none.
    (r"self\._channel\.close\(None\)", "self._channel.close()"),
    # typing's Generator takes three arguments before Python 3.13.
    (r"\bGenerator\[(\w+), None\]", r"Generator[\1, None, None]"),
    (
        r"An asyncio imagegen client over one grpc\.aio channel \(use it from one event loop\)\.",
        "A blocking imagegen client over one gRPC channel (thread-safe; close it when done).",
    ),
    # grpc-stubs types the blocking call iterator's cancel() without annotations.
    (
        r"call\.cancel\(\)\n",
        "call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs\n",
    ),
    # `async for x in call: yield x` has a shorter blocking twin.
    (r"for (\w+) in call:\n\s+yield \1\n", "yield from call\n"),
]


def generate() -> str:
    """The text sync.py must have."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "aio" / "client.py"
        source.parent.mkdir()
        shutil.copy(SOURCE, source)
        rule = unasync.Rule("/aio/", "/sync/", additional_replacements=NAMES)
        unasync.unasync_files([str(source)], [rule])
        text = (Path(tmp) / "sync" / "client.py").read_text()
    for pattern, replacement in REWRITES:
        text, count = re.subn(pattern, replacement, text)
        if count == 0:
            raise SystemExit(f"gensync: {pattern!r} matched nothing in aio.py; update REWRITES")
    # unasync sorts nothing: `import time` takes `import asyncio`'s place.
    return HEADER + text


def write() -> bool:
    """Bring sync.py up to date; whether it changed."""
    fresh = generate()
    if TARGET.exists() and TARGET.read_text() == fresh:
        return False
    TARGET.write_text(fresh)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if sync.py is stale")
    if parser.parse_args().check:
        fresh = generate()
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != fresh:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                "sync.py (on disk)",
                "sync.py (from aio.py)",
            )
            print("sync.py is stale; run `python clients/python/gensync.py`", file=sys.stderr)
            sys.stderr.writelines(diff)
            return 1
        print("sync.py is up to date")
        return 0
    print(f"{TARGET}: {'regenerated' if write() else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
