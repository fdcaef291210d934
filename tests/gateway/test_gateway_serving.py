"""serve_gateway: port 0, a port in use, small answers sent at once, and a graceful stop."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from server.gateway import create_gateway, serve_gateway
from server.gateway.serving import bind

NOBODY = "127.0.0.1:1"  # the routes used here never reach the API


async def test_port_zero_binds_a_free_port_and_stop_frees_it() -> None:
    server, task, port = await serve_gateway(create_gateway(NOBODY), "127.0.0.1", 0)
    assert port > 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/openapi.json")).status_code == 200
    with pytest.raises(OSError, match="in use"):  # an error to the caller, not an exit
        await serve_gateway(create_gateway(NOBODY), "127.0.0.1", port)
    await server.stop()
    assert task.done() and task.exception() is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # released


async def test_small_answers_are_not_held_back_by_nagle() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # so asyncio sets TCP_NODELAY on each connection
    finally:
        sock.close()
    server, _, port = await serve_gateway(create_gateway(NOBODY), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await http.get("/api/v1/generations?limit=x")  # connect and warm up
            started = time.perf_counter()
            for _ in range(20):
                # Answered by the gateway itself: headers and body go out in two writes,
                # which Nagle's algorithm and a delayed ACK would hold ~40 ms each.
                response = await http.get("/api/v1/generations?limit=x")
                assert response.status_code == 400
            elapsed = time.perf_counter() - started
    finally:
        await server.stop()
    assert elapsed < 0.6, f"20 keep-alive requests took {elapsed:.2f} s"
