"""What the gateway tests share: an HTTP-serving App, clients, a standalone gateway, SSE."""

# Test modules import the fixtures by their function names (``app_fixture`` is the fixture
# ``app``, overriding the root conftest's for that module). They live here rather than in
# a conftest.py, which would shadow ``from conftest import make_settings`` for the test
# modules collected after it.

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from conftest import make_settings
from PIL import Image as PILImage

from server.app import App
from server.gateway import create_gateway, serve_gateway
from server.services.tenancy import bootstrap_admin

# Short, so that heartbeat tests take a fraction of a second.
HEARTBEAT = 0.2


@pytest.fixture(name="app_overrides")
def app_overrides_fixture() -> dict[str, Any]:
    """Extra settings for the test's App (parametrize this fixture to change them)."""
    return {}


@pytest.fixture(name="app")
async def app_fixture(
    tmp_path: Path, storage: dict[str, Any], app_overrides: dict[str, Any]
) -> AsyncIterator[App]:
    """A started App serving the REST gateway on a free HTTP port, on each backend."""
    settings = make_settings(
        tmp_path / "data", http_enabled=True, http_port=0, **storage, **app_overrides
    )
    started = App(settings)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def base_url(app: App) -> str:
    return f"http://127.0.0.1:{app.http_port}"


@pytest.fixture(name="client")
async def client_fixture(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app's gateway, sending the dev project's key."""
    assert app.dev_api_key
    async with httpx.AsyncClient(
        base_url=base_url(app), headers={"X-API-Key": app.dev_api_key}, timeout=30
    ) as http:
        yield http


@pytest.fixture(name="admin")
async def admin_fixture(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app's gateway, sending a fresh admin key."""
    key = await bootstrap_admin(app.sessions)
    async with httpx.AsyncClient(
        base_url=base_url(app), headers={"X-API-Key": key}, timeout=30
    ) as http:
        yield http


@asynccontextmanager
async def standalone_gateway(
    target: str | grpc.aio.Channel, heartbeat: float = HEARTBEAT
) -> AsyncIterator[str]:
    """A gateway of its own (its own uvicorn, its own channel) in front of ``target``;
    yields its base URL."""
    server, task, port = await serve_gateway(
        create_gateway(target, heartbeat_seconds=heartbeat), "127.0.0.1", 0, grace_seconds=2
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()
        assert task.done()


def picture(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small noise picture."""
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, fmt)
    return buffer.getvalue()


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The ``data`` of a successful envelope (asserting the status and the envelope)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["success"] is True, body
    return body["data"]


def failed(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The ``error`` of a failed envelope (asserting the status, the envelope and the code)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["success"] is False, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def violated(error: dict[str, Any]) -> list[str]:
    """The field names of an error's field violations."""
    return [v["field"] for v in error.get("details", {}).get("fieldViolations", [])]


@dataclass
class Event:
    """One Server-Sent Event as a client sees it."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    raw_data: list[str] = field(default_factory=list)


async def sse(response: httpx.Response) -> AsyncIterator[Event | str]:
    """Events (and comments, as plain strings) of an event-stream response, as they arrive."""
    current = Event()
    async for line in response.aiter_lines():
        if line == "":
            if current.raw_data or current.event or current.id:
                current.data = json.loads("\n".join(current.raw_data))
                yield current
            current = Event()
        elif line.startswith(":"):
            yield line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current.raw_data.append(value)
            elif name == "id":
                current.id = value
            elif name == "event":
                current.event = value


async def events_of(response: httpx.Response, count: int | None = None) -> list[Event]:
    """The stream's events (comments skipped): all until it ends, or the first ``count``."""
    found: list[Event] = []
    async for item in sse(response):
        if isinstance(item, Event):
            found.append(item)
            if count is not None and len(found) == count:
                break
    return found


async def until_status(
    client: httpx.AsyncClient, generation_id: str, statuses: tuple[str, ...] = ("success",)
) -> dict[str, Any]:
    """Poll GET /generations/{id} until its status is one of ``statuses`` (15 s at most)."""
    for _ in range(300):
        data: dict[str, Any] = ok(await client.get(f"/api/v1/generations/{generation_id}"))
        if data["status"] in statuses:
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"generation {generation_id} never reached {statuses}")
