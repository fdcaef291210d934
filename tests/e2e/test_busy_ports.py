"""A second `imagegen serve` on a busy port fails at once with a clear message and exit code,
instead of sharing the gRPC port (SO_REUSEPORT) or printing a raw traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from serve_process import ServeProcess, free_port

from server.__main__ import EXIT_CANNOT_SERVE


def _serve(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--data-dir", str(data_dir), *flags],
        env={**os.environ, "IMAGEGEN_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_busy_grpc_port_is_refused(tmp_path: Path) -> None:
    first = ServeProcess(tmp_path / "first").start()
    try:
        second = _serve(tmp_path / "second", "--grpc-port", str(first.port), "--no-http")
        assert second.returncode == EXIT_CANNOT_SERVE, second.stderr
        assert f"cannot listen for gRPC on 127.0.0.1:{first.port}" in second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        # The first server still has its port to itself, and serves.
        assert first.serving()
    finally:
        assert first.terminate() == 0


def test_busy_http_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        grpc_port = free_port()
        result = _serve(
            tmp_path / "data", "--grpc-port", str(grpc_port), "--http-port", str(http_port)
        )
    assert result.returncode == EXIT_CANNOT_SERVE, result.stderr
    assert f"cannot listen for HTTP on 127.0.0.1:{http_port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # Nothing was left listening on the gRPC port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", grpc_port))


def test_busy_port_of_standalone_gateway_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "server", "gateway", "--http-port", str(http_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == EXIT_CANNOT_SERVE, result.stderr
    assert f"cannot listen for HTTP on 127.0.0.1:{http_port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
