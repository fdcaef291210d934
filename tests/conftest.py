"""Shared fixtures: a real imagegen App on a free port, with its data in a temp directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.app import App
from server.config import Settings


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: loopback, free port, no HTTP unless asked."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_enabled": False,
        "data_dir": data_dir,
        "log_format": "console",
        "log_level": "warning",
        "poll_interval_seconds": 0.05,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """A started App on SQLite + local images; its dev project key is app.dev_api_key."""
    started = App(make_settings(tmp_path / "data"))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    """A real channel to the app's gRPC port."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield ch


@pytest.fixture
def auth(app: App) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the dev project's key."""
    assert app.dev_api_key
    return (("x-api-key", app.dev_api_key),)
