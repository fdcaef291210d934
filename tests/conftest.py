"""Shared fixtures: real imagegen Apps on free ports, on SQLite + a local directory or on
PostgreSQL + S3 (SeaweedFS), with their data in temporary directories."""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from postgres import Postgres, postgres_server  # noqa: F401  (fixture)
from seaweed import SeaweedFS, remove_bucket, s3_server  # noqa: F401  (fixture)

from genrpc.imagegen.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    flow_pb2_grpc,
    generation_pb2_grpc,
    image_pb2_grpc,
)
from server.app import App
from server.config import Settings
from server.services.tenancy import bootstrap_admin

BACKENDS = ["sqlite", "postgresql"]
NODE_PACKAGE = Path(__file__).resolve().parents[1] / "clients" / "node"

# In-process Apps log through structlog's defaults (a served process configures its own,
# server/logs.py), whose console renderer draws each traceback with rich, every frame's
# locals included: for one SQLAlchemy error, seconds of a loaded machine's CPU on the
# event loop, long enough to time out a health check of the same App. Plain tracebacks.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        ),
    ]
)


@pytest.fixture
def node_package_lock() -> Iterator[None]:
    """Holds clients/node for the test: the README's `npm ci` there (test_readme) replaces
    the node_modules the Node tests run from, and pytest-xdist may run both at once."""
    tag = hashlib.sha256(str(NODE_PACKAGE).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"imagegen-node-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: loopback, free port, no HTTP unless asked."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_enabled": False,
        # With HTTP asked for, the gateway in the test's own process (its tests reach it
        # there); tests/e2e/test_gateway_processes.py runs it in processes of its own.
        "gateway_processes": 0,
        "data_dir": data_dir,
        "log_format": "console",
        "log_level": "warning",
        "poll_interval_seconds": 0.05,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which real storage the test's App runs on."""
    return str(request.param)


@pytest.fixture
async def storage(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Settings overrides for the backend: nothing for SQLite + local images; a fresh
    PostgreSQL database and a fresh S3 bucket for the other (both removed afterwards)."""
    if backend == "sqlite":
        yield {}
        return
    pg: Postgres = request.getfixturevalue("postgres_server")
    s3: SeaweedFS = request.getfixturevalue("s3_server")
    bucket = "t-" + uuid.uuid4().hex[:20]
    url = await pg.create_database()
    yield {
        "database_url": url,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_bucket": bucket,
    }
    remove_bucket(s3, bucket)
    await pg.drop_database(url)


@pytest.fixture
async def app(tmp_path: Path, storage: dict[str, Any]) -> AsyncIterator[App]:
    """A started App; its dev project key is app.dev_api_key."""
    async with started_app(make_settings(tmp_path / "data", **storage)) as started:
        yield started


@asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[App]:
    """An App on ``settings``, started for the block and stopped after it."""
    app = App(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    """A real channel to the app's gRPC port."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield ch


@pytest.fixture
def auth(app: App) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the dev project's key."""
    return dev_key_metadata(app)


Metadata = tuple[tuple[str, str], ...]


def dev_key_metadata(app: App) -> Metadata:
    """Call metadata carrying ``app``'s dev project key (which it must have made)."""
    assert app.dev_api_key
    return (("x-api-key", app.dev_api_key),)


@pytest.fixture
def images(channel: grpc.aio.Channel) -> image_pb2_grpc.ImageServiceStub:
    return image_pb2_grpc.ImageServiceStub(channel)


@pytest.fixture
def flows(channel: grpc.aio.Channel) -> flow_pb2_grpc.FlowServiceStub:
    return flow_pb2_grpc.FlowServiceStub(channel)


@pytest.fixture
def gens(channel: grpc.aio.Channel) -> generation_pb2_grpc.GenerationServiceStub:
    return generation_pb2_grpc.GenerationServiceStub(channel)


@pytest.fixture
async def other(app: App, channel: grpc.aio.Channel) -> Metadata:
    """Call metadata of a key of a second project."""
    admin = (("x-api-key", await bootstrap_admin(app.sessions)),)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    project = await stub.CreateProject(
        admin_pb2.CreateProjectRequest(slug="other", name="Other"), metadata=admin
    )
    issued = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(project_id=project.id, name="other"), metadata=admin
    )
    return (("x-api-key", issued.api_key),)
