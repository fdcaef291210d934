"""Run `imagegen serve` as a real subprocess on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def children_of(pid: int) -> list[int]:
    """A process's child processes."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (reaped, or a zombie its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """`python -m server serve` with its own data directory, env overrides and log file.

    ``command`` runs another launcher instead (e.g. an installed ``imagegen``).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        command: Sequence[str] = (sys.executable, "-m", "server"),
        **env: str,
    ) -> None:
        self.data_dir = data_dir
        self.command = list(command)
        self.port = port or free_port()
        self.env = {**os.environ, "IMAGEGEN_LOG_LEVEL": "info", **env}
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServeProcess:
        """Start the server and wait until health answers SERVING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *self.command,
                "serve",
                "--grpc-port",
                str(self.port),
                "--no-http",
                "--data-dir",
                str(self.data_dir),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited {self.process.returncode}:\n{self.log()}")
            if self.serving():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"serve did not become SERVING:\n{self.log()}")

    def serving(self) -> bool:
        """Whether grpc.health.v1 answers SERVING."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def api_key(self) -> str:
        """The dev project's key written on first start."""
        return (self.data_dir / "dev-api-key").read_text().strip()

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (a crash): no cleanup runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
