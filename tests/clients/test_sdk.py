"""The Python SDK against real servers: typed errors, retries, resuming watches, files."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from conftest import make_settings
from PIL import Image as PILImage

from genrpc.imagegen.v1 import generation_pb2, image_pb2
from imagegen_client import (
    AsyncClient,
    Client,
    FailedPrecondition,
    ImagegenError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    live_url,
)
from server.app import App
from server.services.tenancy import bootstrap_admin

SUCCESS = generation_pb2.GENERATION_STATUS_SUCCESS
PROCESSING = generation_pb2.GENERATION_STATUS_PROCESSING
ROOT = Path(__file__).resolve().parents[2]
MISSING_ID = "01a20000-0000-7000-8000-000000000000"
# Patient enough for a server that is still starting; quick enough for a test.
PATIENT = RetryPolicy(initial_backoff=0.05, max_backoff=0.5, max_attempts=60)


def address(app: App) -> str:
    return f"127.0.0.1:{app.grpc_port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def retries_logged(caplog: pytest.LogCaptureFixture, rpc: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "imagegen.client" and record.getMessage().startswith(f"retrying {rpc} ")
    ]


def reconnects_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("reconnecting WatchGeneration")
    ]


# --- round trips --------------------------------------------------------------


async def test_sync_client_round_trip(app: App) -> None:
    def scenario() -> None:
        with Client(address(app), app.dev_api_key) as client:
            created = client.create_generation(
                "a red fox in snow", aspect_ratio="16:9", meta={"campaign": "winter", "n": 2}
            )
            assert created.status == generation_pb2.GENERATION_STATUS_PENDING
            done = client.wait(created.id, timeout=30)
            assert done.status == SUCCESS
            assert (done.output_image.width, done.output_image.height) == (1792, 1008)
            assert dict(done.meta) == {"campaign": "winter", "n": 2}

            assert client.get_generation(created.id).revision == done.revision
            page = client.list_generations(status="success", limit=5)
            assert [g.id for g in page.generations] == [created.id]
            assert client.list_generations(status="FAILED").total == 0

            # A watch of a finished generation is its one current state.
            events = list(client.watch(created.id))
            assert [(e.type, e.revision) for e in events] == [
                (generation_pb2.GENERATION_EVENT_TYPE_SNAPSHOT, done.revision)
            ]

            updated = client.update_generation(created.id, meta={"campaign": "spring"})
            assert dict(updated.meta) == {"campaign": "spring"}
            assert updated.prompt == done.prompt  # only meta was in the mask

            assert client.delete_generation(created.id).id == created.id
            with pytest.raises(NotFound) as caught:
                client.get_generation(created.id)
            error = caught.value
            assert error.code == grpc.StatusCode.NOT_FOUND
            assert error.reason == "GENERATION_NOT_FOUND"
            assert error.correlation_id  # the server's id of the call, from x-request-id
            assert str(error) == (
                f"NOT_FOUND GENERATION_NOT_FOUND: generation '{created.id}' not found"
            )

    await asyncio.to_thread(scenario)


async def test_async_client_round_trip(app: App) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        created = await client.create_generation("a lighthouse at dusk", auto_enhance=False)
        revisions: list[int] = []
        statuses: list[int] = []
        async for event in client.watch(created.id):
            revisions.append(event.revision)
            statuses.append(event.generation.status)
        assert revisions == sorted(set(revisions))
        assert statuses[-1] == SUCCESS
        done = await client.wait(created.id, timeout=10)
        assert done.revision == revisions[-1]
        assert done.prompt == "a lighthouse at dusk"  # no enhancement asked
        regenerated = await client.regenerate_generation(created.id)
        assert regenerated.revision > done.revision
        again = await client.wait(created.id, timeout=30)
        assert again.status == SUCCESS
        assert again.output_image.id == done.output_image.id  # same image, new content
        page = await client.list_generations(limit=1)
        assert page.generations[0].id == created.id


async def test_project_watch_resumes_from_its_cursor(app: App) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        first = await client.create_generation("a red balloon")
        await client.wait(first.id, timeout=30)
        # From the beginning (cursor "0") every change of the project comes, in order.
        seen: list[tuple[str, int]] = []
        cursors: list[str] = []
        everything = client.watch_generations(since_cursor="0", timeout=10)
        async with contextlib.aclosing(everything):
            async for event in everything:
                seen.append((event.generation.id, event.revision))
                cursors.append(event.cursor)
                if event.generation.status == SUCCESS:
                    break
        assert seen == [(first.id, revision) for revision in range(1, len(seen) + 1)]
        # Resuming after the second change repeats nothing.
        second = await client.create_generation("a blue balloon")
        rest = client.watch_generations(since_cursor=cursors[1], timeout=10)
        async with contextlib.aclosing(rest):
            async for event in rest:
                assert (event.generation.id, event.revision) not in seen[:2]
                if event.generation.id == second.id:
                    break


async def test_address_and_key_from_the_environment(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEGEN_ADDRESS", address(app))
    monkeypatch.setenv("IMAGEGEN_API_KEY", app.dev_api_key or "")
    async with AsyncClient() as client:
        assert client.target.address == address(app)
        assert (await client.list_generations()).total == 0
    async with AsyncClient(api_key="igk_not_a_real_key") as client:
        with pytest.raises(Unauthenticated) as caught:
            await client.list_generations()
        assert caught.value.reason


async def test_async_client_sends_model_seed_negative_prompt_and_format(app: App) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        created = await client.create_generation(
            "a lighthouse", model="local", seed=5, negative_prompt="fog", output_format="jpeg"
        )
        assert (created.model, created.seed) == ("local", 5)
        assert (created.negative_prompt, created.output_format) == ("fog", "jpeg")
        done = await client.wait(created.id, timeout=30)
        assert done.output_image.mime_type == "image/jpeg"
        with pytest.raises(FailedPrecondition) as caught:
            await client.create_generation("a lighthouse", model="gemini/gemini-2.5-flash-image")
        assert caught.value.reason == "MODEL_UNAVAILABLE"


async def test_errors_are_typed_with_their_details(app: App) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.create_generation("  ", aspect_ratio="4:3")
        error = caught.value
        assert isinstance(error, ImagegenError)
        assert error.reason == "VALIDATION_ERROR"
        assert {v.field for v in error.field_violations} == {"prompt", "aspect_ratio"}
        assert error.correlation_id
        assert error.retry_delay is None

        with pytest.raises(PermissionDenied) as denied:
            await client.list_projects()  # a project key on AdminService
        assert denied.value.reason == "ADMIN_KEY_REQUIRED"

    async with AsyncClient(address(app)) as keyless:
        with pytest.raises(Unauthenticated) as missing:
            await keyless.get_generation(MISSING_ID)
        assert missing.value.reason == "API_KEY_MISSING"


async def test_admin_projects_and_keys(app: App) -> None:
    admin_key = await bootstrap_admin(app.sessions)
    async with AsyncClient(address(app), admin_key) as admin:
        project = await admin.create_project("acme", name="Acme")
        assert project.slug == "acme"
        assert "acme" in [p.slug for p in (await admin.list_projects()).projects]
        issued = await admin.create_api_key(project_id=project.id, name="ci")
        assert issued.api_key and issued.key.project_id == project.id
        keys = await admin.list_api_keys(project_id=project.id)
        assert [k.id for k in keys.keys] == [issued.key.id]
        async with AsyncClient(address(app), issued.api_key) as tenant:
            assert (await tenant.list_generations()).total == 0
            revoked = await admin.revoke_api_key(issued.key.id)
            assert revoked.HasField("revoke_time")
            with pytest.raises(Unauthenticated):
                await tenant.list_generations()


# --- retries --------------------------------------------------------------------


@pytest.fixture
async def limited_app(tmp_path: Path) -> AsyncIterator[App]:
    """A server allowing one call at once per key, refilled at two calls a second."""
    settings = make_settings(tmp_path / "limited", rate_limit_per_minute=120, rate_limit_burst=1)
    started = App(settings)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_rate_limited_reads_and_keyed_writes_are_retried(
    limited_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.client")
    async with AsyncClient(address(limited_app), limited_app.dev_api_key) as client:
        await client.list_generations()  # spends the only call in the bucket
        started = time.monotonic()
        page = await client.list_generations()  # RESOURCE_EXHAUSTED, then honoured RetryInfo
        waited = time.monotonic() - started
        assert page.total == 0
        (retry,) = retries_logged(caplog, "ListGenerations")
        # The delay the SDK chose (at least the server's RetryInfo), and it really waited it:
        # no wall-clock guess, since a slow first call leaves the server asking for less.
        planned = float(retry.split(" in ", 1)[1].split("s ", 1)[0])
        assert planned > 0
        assert waited >= planned

        # A create carries a generated request_id, so its retry is safe: one generation.
        created = await client.create_generation("a kite over the dunes")
        assert retries_logged(caplog, "CreateGeneration")
        await asyncio.sleep(0.6)
        listed = await client.list_generations()
        assert [g.id for g in listed.generations] == [created.id]


async def test_calls_without_request_id_are_not_retried(
    limited_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.client")
    async with AsyncClient(address(limited_app), limited_app.dev_api_key) as client:
        created = await client.create_generation("a paper boat")
        for call in (
            lambda: client.update_generation(created.id, meta={"x": 1}),
            lambda: client.delete_generation(created.id),
            lambda: client.create_generation("another boat", request_id=""),
        ):
            await asyncio.sleep(0.6)  # a full bucket again
            await client.get_generation(created.id)  # … spent
            with pytest.raises(ResourceExhausted) as caught:
                await call()
            assert caught.value.reason == "RATE_LIMITED"
            assert caught.value.retry_delay is not None
        assert not retries_logged(caplog, "UpdateGeneration")
        assert not retries_logged(caplog, "DeleteGeneration")
        assert len(retries_logged(caplog, "CreateGeneration")) <= 1  # only the first, keyed one
        await asyncio.sleep(0.6)
        assert (await client.get_generation(created.id)).id == created.id  # never deleted


async def test_sync_retry_gives_up_at_the_deadline(tmp_path: Path) -> None:
    # One call at once per key, refilled every 2 s: the server's RetryInfo (~2 s) is far
    # longer than the 1 s deadline, which is itself far longer than a call takes.
    settings = make_settings(tmp_path / "slow", rate_limit_per_minute=30, rate_limit_burst=1)
    app = App(settings)
    await app.start()

    def scenario() -> None:
        with Client(address(app), app.dev_api_key, timeout=1.0) as client:
            client.list_generations(timeout=10)
            # The wait does not fit in the deadline: no retry (a retry after sleeping
            # would have ended in DEADLINE_EXCEEDED instead).
            with pytest.raises(ResourceExhausted):
                client.list_generations()
            assert client.list_generations(timeout=10).total == 0  # it fits: waited out

    try:
        await asyncio.to_thread(scenario)
    finally:
        await app.stop()


async def test_unavailable_then_success(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.client")
    port = free_port()
    settings = make_settings(tmp_path / "late", grpc_port=port)
    first = App(settings)
    await first.start()  # once, only to create the project and its key
    key = first.dev_api_key
    await first.stop()

    def calls() -> int:
        with Client(f"127.0.0.1:{port}", key, retry=PATIENT) as client:
            with pytest.raises(Unavailable):
                # Not safe to send twice (no request_id), so it fails at once (no retry logged).
                client.delete_generation(MISSING_ID)
            return client.list_generations(timeout=20).total

    task = asyncio.create_task(asyncio.to_thread(calls))
    await asyncio.sleep(1.0)  # the client meets a closed port for a while
    late = App(settings)
    await late.start()
    try:
        total = await task
    finally:
        await late.stop()
    assert total == 0
    assert any("after UNAVAILABLE" in line for line in retries_logged(caplog, "ListGenerations"))
    assert not retries_logged(caplog, "DeleteGeneration")


# --- a watch that outlives its server --------------------------------------------


class ServeProcess:
    """`python -m server serve` on a fixed port and data dir, restartable."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log = data_dir.parent / f"serve-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
        self.env.update(
            IMAGEGEN_GENERATOR_DELAY_SECONDS="2",
            # A killed worker's generation is taken up again after this.
            IMAGEGEN_LEASE_SECONDS="1.5",
            IMAGEGEN_SHUTDOWN_GRACE_SECONDS="0.5",
            IMAGEGEN_POLL_INTERVAL_SECONDS="0.1",
            IMAGEGEN_LOG_LEVEL="warning",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "serve",
                    "--grpc-port",
                    str(self.port),
                    "--no-http",
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api_key(self, timeout: float = 30) -> str:
        key_file = self.data_dir / "dev-api-key"
        deadline = time.monotonic() + timeout
        while not key_file.exists() or not key_file.read_text().strip():
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the server wrote no dev-api-key"
            time.sleep(0.05)
        return key_file.read_text().strip()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, sig: signal.Signals) -> None:
        self.stop(sig)
        self.start()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path / "data", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def assert_every_state_once(
    events: list[generation_pb2.GenerationEvent], history: list[int]
) -> None:
    """Revisions strictly increase, and after the first one none of the server's is missing."""
    revisions = [event.revision for event in events]
    assert revisions == sorted(set(revisions)), revisions
    assert revisions[1:] == history, (revisions, history)
    assert events[-1].generation.status == SUCCESS


@pytest.mark.slow
def test_sync_watch_survives_a_killed_server(
    serve: ServeProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.client")
    with Client(serve.address, serve.api_key(), retry=PATIENT) as client:
        created = client.create_generation("a storm over the harbour")
        events = []
        restarted = False
        for event in client.watch(created.id, timeout=60):
            events.append(event)
            if not restarted and event.generation.status == PROCESSING:
                # SIGKILL mid-run: no goodbye to the stream, the lease is left to expire.
                serve.restart(signal.SIGKILL)
                restarted = True
        assert restarted
        assert reconnects_logged(caplog)
        rest = client.watch_generation(created.id, since_revision=events[0].revision)
        history = [e.revision for e in rest]
        assert_every_state_once(events, history)
        assert events[-1].generation.attempt == 2  # the run was taken up again


@pytest.mark.slow
async def test_async_watch_survives_a_restarted_server(
    serve: ServeProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.client")
    key = await asyncio.to_thread(serve.api_key)
    async with AsyncClient(serve.address, key, retry=PATIENT) as client:
        created = await client.create_generation("a tram in the fog")
        events = []
        restarted = False
        async for event in client.watch(created.id, timeout=60):
            events.append(event)
            if not restarted and event.generation.status == PROCESSING:
                # SIGTERM: the server drains (grace 0.5 s) and drops the stream.
                await asyncio.to_thread(serve.restart, signal.SIGTERM)
                restarted = True
        assert restarted
        assert reconnects_logged(caplog)
        history = [
            e.revision
            async for e in client.watch_generation(created.id, since_revision=events[0].revision)
        ]
        assert_every_state_once(events, history)


# --- images and flows ---------------------------------------------------------------


async def test_upload_and_download(app: App, tmp_path: Path) -> None:
    source = tmp_path / "logo.png"
    source.write_bytes(png())

    def scenario() -> None:
        with Client(address(app), app.dev_api_key) as client:
            try:
                image = client.upload_file(source, alias="@logo", meta={"team": "brand"})
            except Unimplemented:
                pytest.skip("ImageService is not served yet")
            assert image.source == image_pb2.IMAGE_SOURCE_UPLOADED
            assert (image.width, image.height, image.mime_type) == (64, 48, "image/png")
            assert client.resolve_alias("@logo").image.id == image.id
            assert client.get_image("@logo").id == image.id
            assert [i.id for i in client.list_images(source="uploaded").images] == [image.id]

            target = tmp_path / "out" / "copy.png"
            downloaded = client.download("@logo", target)
            assert target.read_bytes() == source.read_bytes()
            assert (downloaded.mime_type, downloaded.size) == ("image/png", image.file_size)

            # A failed download leaves neither the file nor a temporary one behind.
            with pytest.raises(NotFound):
                client.download("@nothing-here", tmp_path / "out" / "missing.png")
            assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.png"]

            chunks = list(client.read_image_content(image.id))
            assert b"".join(c.data for c in chunks) == source.read_bytes()

            assert client.set_image_alias(image.id, "").alias == ""
            assert client.delete_image(image.id).id == image.id

    await asyncio.to_thread(scenario)


async def test_flows(app: App) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        created = await client.create_generation("a green field")
        try:
            flows = await client.list_flows()
        except Unimplemented:
            pytest.skip("FlowService is not served yet")
        assert [f.id for f in flows.flows] == [created.flow_id]
        await client.wait(created.id, timeout=30)
        flow = await client.get_flow(created.flow_id)
        assert flow.generation_count == 1
        listed = await client.list_flow_generations(created.flow_id)
        assert [g.id for g in listed.generations] == [created.id]
        done = await client.get_generation(created.id)
        flow = await client.update_flow_aliases(created.flow_id, {"@hero": done.output_image.id})
        assert dict(flow.aliases) == {"@hero": done.output_image.id}
        flow = await client.delete_flow_alias(created.flow_id, "@hero")
        assert dict(flow.aliases) == {}
        deleted = await client.delete_flow(created.flow_id)
        assert deleted.generations_deleted == 1


async def test_live_scopes_through_both_clients(app: App) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        created = await client.create_live_scope("posters", new_generations_limit=4)
        assert (created.slug, created.new_generations_limit) == ("posters", 4)
        assert created.allow_new_generations
        closed = await client.update_live_scope("posters", allow_new_generations=False)
        assert not closed.allow_new_generations and closed.new_generations_limit == 4
        assert (await client.get_live_scope("posters")).id == created.id
    with Client(address(app), app.dev_api_key) as sync_client:
        page = await asyncio.to_thread(sync_client.list_live_scopes)
        assert [s.slug for s in page.scopes] == ["posters"] and page.total == 1
        deleted = await asyncio.to_thread(sync_client.delete_live_scope, "posters")
        assert deleted.slug == "posters" and deleted.deleted_generations == 0
    url = live_url("https://img.example/", "default", "posters", "a red kite", aspect_ratio="3:2")
    assert url == "https://img.example/cdn/default/live/posters?prompt=a+red+kite&aspectRatio=3%3A2"
