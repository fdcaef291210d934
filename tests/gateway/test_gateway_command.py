"""`imagegen gateway` as its own process in front of a running gRPC server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from rest import (  # noqa: F401  (fixtures, by function name)
    app_fixture,
    app_overrides_fixture,
    ok,
)

from server.app import App


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", ["sqlite"])  # the process under test is the gateway
async def test_gateway_command_serves_and_stops_on_sigterm(app: App) -> None:
    assert app.dev_api_key
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "gateway",
        "--target",
        f"127.0.0.1:{app.grpc_port}",
        "--http-port",
        str(port),
        env={**os.environ, "IMAGEGEN_LOG_LEVEL": "warning"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert f"serving HTTP on 127.0.0.1:{port}" in line.decode(), line
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": app.dev_api_key}
        ) as http:
            created = ok(await http.post("/api/v1/generations", json={"prompt": "x"}), 201)
            assert ok(await http.get(f"/api/v1/generations/{created['id']}"))["id"] == created["id"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
