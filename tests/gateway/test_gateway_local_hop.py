"""The in-process gateway reaches its gRPC server over an abstract Unix socket on Linux."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from conftest import make_settings, started_app
from rest import ok

from server.app import App


async def _create_and_read(app: App) -> None:
    assert app.dev_api_key
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}",
        headers={"X-API-Key": app.dev_api_key},
        timeout=30,
    ) as http:
        created = ok(await http.post("/api/v1/generations", json={"prompt": "a heron"}), 201)
        read = ok(await http.get(f"/api/v1/generations/{created['id']}"))
        assert read["prompt"] == "a heron"


@pytest.mark.skipif(sys.platform != "linux", reason="abstract Unix sockets are Linux's")
async def test_each_app_has_its_own_socket_and_its_gateway_uses_it(tmp_path: Path) -> None:
    settings = {"http_enabled": True, "http_port": 0, "workers": 0}
    async with (
        started_app(make_settings(tmp_path / "one", **settings)) as one,
        started_app(make_settings(tmp_path / "two", **settings)) as two,
    ):
        assert one.gateway_target and one.gateway_target.startswith("unix-abstract:imagegen-")
        assert two.gateway_target and two.gateway_target.startswith("unix-abstract:imagegen-")
        assert one.gateway_target != two.gateway_target
        # Each gateway answers from its own server: a key is only known to its own app.
        await _create_and_read(one)
        await _create_and_read(two)
        assert two.dev_api_key
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{one.http_port}", headers={"X-API-Key": two.dev_api_key}
        ) as http:
            assert (await http.get("/api/v1/generations")).status_code == 401


async def test_elsewhere_the_gateway_uses_the_grpc_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    settings = make_settings(tmp_path / "data", http_enabled=True, http_port=0, workers=0)
    async with started_app(settings) as app:
        assert app.gateway_target == f"127.0.0.1:{app.grpc_port}"
        await _create_and_read(app)
