"""The README's shell and Python blocks, run as written, in order, against a server it starts.

Fences say what a block is: ```sh server starts the server (run here in the
background, then waited for), ```sh and ```python blocks run in order in one
bash session (so shell variables carry from block to block), ```sh manual
blocks need what a test cannot have (Docker, the whole suite) and are only
checked to exist. Nothing is substituted: the blocks run in a scratch folder
that looks like a fresh clone (the checkout's files linked in, the .venv
shared), with IMAGEGEN_GRPC_PORT / IMAGEGEN_HTTP_PORT set to free ports — the
same variables the server and the README's commands read.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# What a fresh clone has that the blocks use.
CHECKOUT = [".venv", "scripts", "clients", "samples", "pyproject.toml", "protos", "README.md"]

# The README runs `npm ci` in clients/node, which test_node runs from (see
# conftest.node_package_lock).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("node_package_lock")]


def blocks() -> list[tuple[str, str]]:
    """(kind, text) of every fenced block: kind is "sh", "sh server", "sh manual", "python", …"""
    return [
        (f"{lang} {info.strip()}".strip(), body)
        for lang, info, body in FENCE.findall(README.read_text())
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def session_script(runnable: list[tuple[str, str]]) -> str:
    """One bash script: each block announced on stderr, Python blocks through the venv's python."""
    lines = ["set -euo pipefail"]
    for number, (kind, body) in enumerate(runnable, 1):
        lines.append(f"echo '--- README block {number} ({kind})' >&2")
        if kind == "python":
            lines.append(f"python - <<'README_PYTHON'\n{body}README_PYTHON")
        else:
            lines.append(body)
    return "\n".join(lines) + "\n"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder that looks like a fresh clone to the README's commands.

    Its .venv is the checkout's, brought up to date here first: scripts/run
    (the README's server block) would otherwise reinstall the editable
    packages from the scratch folder, which is gone after the test.
    """
    subprocess.run(
        ["bash", "-c", "source scripts/venv.sh"], cwd=ROOT, check=True, capture_output=True
    )
    folder = tmp_path / "imagegen"
    folder.mkdir()
    for name in CHECKOUT:
        (folder / name).symlink_to(ROOT / name)
    return folder


@pytest.fixture
def env() -> dict[str, str]:
    """The environment of a new terminal: no IMAGEGEN_* of ours, free ports for the server."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    clean.pop("VIRTUAL_ENV", None)
    return {
        **clean,
        "IMAGEGEN_GRPC_PORT": str(free_port()),
        "IMAGEGEN_HTTP_PORT": str(free_port()),
        "IMAGEGEN_LOG_LEVEL": "warning",
    }


@pytest.fixture
def server(scratch: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The README's server block, started in the background until the test ends."""
    (body,) = [body for kind, body in blocks() if kind == "sh server"]
    log = (scratch.parent / "server.log").open("wb")
    process = subprocess.Popen(
        ["bash", "-c", body],
        cwd=scratch,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{env['IMAGEGEN_GRPC_PORT']}"
    deadline = time.monotonic() + 120
    while not serving(address):
        assert process.poll() is None, (scratch.parent / "server.log").read_text()
        assert time.monotonic() < deadline, "the README's server did not start"
        time.sleep(0.2)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_readme_blocks_are_marked() -> None:
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("sh server") == 1
    # Only these kinds: the test runs "sh" and "python", never a block it cannot classify.
    assert set(kinds) <= {"sh", "sh server", "sh manual", "python", "js", "text"}
    assert kinds.count("sh") >= 7 and "python" in kinds


def test_readme_runs_as_written(scratch: Path, env: dict[str, str], server: object) -> None:
    runnable = [(kind, body) for kind, body in blocks() if kind in ("sh", "python")]
    done = subprocess.run(
        ["bash", "-c", session_script(runnable)],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    # Every block ran, and the files they promise are pictures.
    assert done.stderr.count("--- README block") == len(runnable)
    for name in ("hero.png", "mug.png", "logo-copy.png", "logo-rest.png", "fox.png"):
        assert (scratch / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (scratch / "logo-rest.png").read_bytes() == (ROOT / "samples" / "logo.png").read_bytes()
    # The Python block printed the size generate() promises.
    assert "1792 1008 image/png" in done.stdout
