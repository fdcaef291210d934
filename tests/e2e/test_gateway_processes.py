"""`imagegen serve` with IMAGEGEN_GATEWAY_PROCESSES: the REST gateway in processes of its own
on the server's HTTP port, /metrics still the server's, a child that dies started again, and
no child outliving the server (SIGTERM, kill -9), a child that cannot start stopping the
start, and each process's log lines carrying its pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from serve_process import children_of, free_port, gone

from server.app import App, StartupError


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    http_port: int
    key: str
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines the server and its gateway processes wrote to their stderr."""
        text = self.log_path.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def children(self) -> list[int]:
        """The server's child processes (its gateway processes)."""
        return children_of(self.process.pid)

    def request(self, method: str, path: str, body: dict[str, object] | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            data=data,
            method=method,
            headers={"X-API-Key": self.key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body_bytes: bytes = response.read()
            return body_bytes


def _until(condition: object, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`imagegen serve` (SQLite) with two gateway processes, answering REST."""
    http_port = free_port()
    data_dir = tmp_path / "data"
    log_path = tmp_path / "serve.log"
    # The child writes to its own copy of the descriptor; this one closes at once.
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "server", "serve", "--grpc-port", "0"),
                *("--http-port", str(http_port), "--data-dir", str(data_dir)),
            ],
            env={
                **os.environ,
                "IMAGEGEN_LOG_LEVEL": "info",
                "IMAGEGEN_LOG_FORMAT": "json",
                "IMAGEGEN_GATEWAY_PROCESSES": "2",
                "IMAGEGEN_DATABASE_URL": "",
                "IMAGEGEN_S3_ENDPOINT": "",
            },
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        assert _until(lambda: (data_dir / "dev-api-key").exists(), 60)
        key = (data_dir / "dev-api-key").read_text().strip()
        served = Served(process, http_port, key, log_path)

        def answers() -> bool:
            try:
                served.request("GET", "/api/v1/generations")
            except (urllib.error.URLError, ConnectionError):
                return False
            return True

        assert _until(answers, 60), "the gateway never answered"
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_rest_and_metrics_through_gateway_processes(served: Served) -> None:
    assert len(served.children()) == 2
    made = json.loads(served.request("POST", "/api/v1/generations", {"prompt": "a lantern"}))
    got = json.loads(served.request("GET", f"/api/v1/generations/{made['data']['id']}"))
    assert got["data"]["id"] == made["data"]["id"]
    metrics = served.request("GET", "/metrics").decode()
    # The server's counters, relayed: the calls the gateway processes made to it.
    assert 'method="/imagegen.v1.GenerationService/CreateGeneration"' in metrics
    assert 'method="/imagegen.v1.GenerationService/GetGeneration"' in metrics


def test_each_process_logs_its_own_pid(served: Served) -> None:
    # The gateway processes share the server's stderr: the pid tells whose line it is.
    children = served.children()

    def all_started() -> bool:
        events = [(x["event"], x["pid"]) for x in served.log_lines()]
        gateways = sorted(pid for event, pid in events if event == "gateway_serving")
        return gateways == sorted(children) and any(event == "serving" for event, _ in events)

    assert _until(all_started), served.log_path.read_text(errors="replace")
    lines = served.log_lines()
    started = [x for x in lines if x.get("event") in ("gateway_processes_started", "serving")]
    assert len(started) == 2
    assert {x["pid"] for x in started} == {served.process.pid}
    # Every line, uvicorn's own (stdlib logging) included, names one of the three.
    assert {x["pid"] for x in lines} == {served.process.pid, *children}


def test_a_gateway_process_that_dies_is_started_again(served: Served) -> None:
    first, second = served.children()
    os.kill(first, signal.SIGKILL)
    assert _until(lambda: len(served.children()) == 2 and first not in served.children())
    assert second in served.children()
    for _ in range(10):  # whichever process accepts, every request is answered
        served.request("GET", "/api/v1/generations")


def test_sigterm_ends_the_gateway_processes_too(served: Served) -> None:
    children = served.children()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(30) == 0
    assert all(gone(pid) for pid in children)


def test_gateway_processes_leave_when_the_server_is_killed(served: Served) -> None:
    children = served.children()
    served.process.kill()
    served.process.wait(30)
    assert _until(lambda: all(gone(pid) for pid in children), 10), "a child outlived it"
    # And the port is free again for the next start.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", served.http_port))


async def test_a_gateway_process_that_cannot_start_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The children read their settings from the environment; this one's cannot be parsed
    # (the App's own settings are given, not read). The start ends with the reason, and
    # leaves nothing behind: no child, the HTTP port free, the gRPC server stopped.
    monkeypatch.setenv("IMAGEGEN_GRPC_PORT", "not-a-port")
    before = set(children_of(os.getpid()))  # the session's servers, say
    http_port = free_port()
    app = App(
        make_settings(
            tmp_path / "data", http_enabled=True, http_port=http_port, gateway_processes=1
        )
    )
    with pytest.raises(StartupError, match="the gateway process did not start"):
        await app.start()
    assert app.gateway_processes is None
    assert set(children_of(os.getpid())) <= before
    with socket.create_server(("127.0.0.1", http_port)):
        pass  # the port was let go
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", app.grpc_port), timeout=2).close()
