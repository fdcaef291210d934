"""An `imagegen serve` subprocess with the REST gateway on, for the fuzz tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """`python -m server serve` on free gRPC and HTTP ports, with its own data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = data_dir.parent / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._admin_key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 60.0) -> Served:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "IMAGEGEN_LOG_LEVEL": "warning", "IMAGEGEN_WORKERS": "2"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "serve",
                    "--grpc-port",
                    str(self.grpc_port),
                    "--http-port",
                    str(self.http_port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not become ready:\n{self.log()}")

    def api_key(self) -> str:
        """The dev project's key, written on first start."""
        return (self.data_dir / "dev-api-key").read_text().strip()

    def admin_key(self) -> str:
        """An admin key, made once with `imagegen admin bootstrap` on the same database."""
        if self._admin_key is None:
            made = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "admin",
                    "bootstrap",
                    "--data-dir",
                    str(self.data_dir),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            self._admin_key = made.stdout.strip().splitlines()[-1]
        return self._admin_key

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
