"""Dependency outages on real parts: PostgreSQL stopped and started again, SeaweedFS stopped
and started again, SeaweedFS hung (SIGSTOP). While a dependency is down, calls that need it
answer UNAVAILABLE with a reason (REST 503), readiness is false (grpc.health.v1 NOT_SERVING,
GET /readyz 503) and the outage is logged once; afterwards everything resumes without a
restart, and no generation is lost or duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from conftest import make_settings
from expect import details
from grpc_health.v1 import health_pb2, health_pb2_grpc
from netproxy import SilentProxy
from PIL import Image as PILImage
from postgres import DedicatedPostgres, Postgres, start_dedicated_postgres
from seaweed import SeaweedFS, restart_seaweedfs, start_seaweedfs

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, image_pb2, image_pb2_grpc
from server.app import App
from server.domain import backoff
from server.events.hub import EventHub
from server.events.listener import CHANNEL, NotifyListener, asyncpg_dsn

# Bounds on waiting for a state to be reached; reached in well under a second normally.
WAIT_SECONDS = 60.0
Md = tuple[tuple[str, str], ...]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds (bounded: a failure names ``what``)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.1)


class Probe:
    """What a client sees of one App: gRPC health, /healthz, /readyz, and API calls."""

    def __init__(self, app: App, channel: grpc.aio.Channel, http: httpx.AsyncClient) -> None:
        assert app.dev_api_key
        self.app = app
        self.auth: Md = (("x-api-key", app.dev_api_key),)
        self.http = http
        self.health = health_pb2_grpc.HealthStub(channel)
        self.gens = generation_pb2_grpc.GenerationServiceStub(channel)
        self.images = image_pb2_grpc.ImageServiceStub(channel)

    async def serving(self) -> bool:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def ready(self) -> bool:
        return (await self.http.get("/readyz")).status_code == 200

    async def not_ready(self) -> bool:
        return not await self.serving() and (await self.http.get("/readyz")).status_code == 503

    async def create(self, prompt: str) -> str:
        created = await self.gens.CreateGeneration(
            g.CreateGenerationRequest(prompt=prompt), metadata=self.auth
        )
        return created.id

    async def all_succeed(self, ids: list[str]) -> bool:
        for generation_id in ids:
            got = await self.gens.GetGeneration(
                g.GetGenerationRequest(id=generation_id), metadata=self.auth
            )
            if got.status != g.GENERATION_STATUS_SUCCESS:
                assert got.status != g.GENERATION_STATUS_FAILED, got
                return False
        return True

    async def nothing_lost_or_doubled(self, ids: list[str]) -> None:
        listed = await self.gens.ListGenerations(
            g.ListGenerationsRequest(limit=100), metadata=self.auth
        )
        assert sorted(item.id for item in listed.generations) == sorted(ids)
        outputs = [item.output_image.id for item in listed.generations]
        assert all(outputs) and len(set(outputs)) == len(outputs)
        images = await self.images.ListImages(
            image_pb2.ListImagesRequest(limit=100), metadata=self.auth
        )
        assert sorted(image.id for image in images.images) == sorted(outputs)
        for image_id in outputs:
            chunks = self.images.ReadImageContent(
                image_pb2.ReadImageContentRequest(id_or_alias=image_id), metadata=self.auth
            )
            assert b"".join([chunk.data async for chunk in chunks])


async def expect_unavailable(call: Awaitable[Any], reason: str) -> None:
    """``call`` fails UNAVAILABLE with ``reason`` (never INTERNAL or UNKNOWN)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert details(caught.value)[0] == reason


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[Probe]:
    """A dedicated App (HTTP on) and a Probe of it; stopped afterwards."""
    app = App(
        make_settings(
            tmp_path / "data",
            **{
                "http_enabled": True,
                "http_port": 0,
                "log_level": "info",
                "readiness_interval_seconds": 0.2,
                "lease_seconds": 3.0,
                "retry_backoff_seconds": 0.1,
                **settings,
            },
        )
    )
    await app.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http,
        ):
            yield Probe(app, channel, http)
    finally:
        await app.stop()


def logged(capsys: pytest.CaptureFixture[str], seen: list[str]) -> str:
    """Everything logged so far (capsys hands out each line once: keep them)."""
    captured = capsys.readouterr()
    seen.append(captured.out + captured.err)
    return "".join(seen)


# The names of an App's long-lived tasks (server/engine, server/events).
BACKGROUND_TASKS = {
    "dispatcher",
    "lease-keeper",
    "lease-checker",
    "queue-depth",
    "deadlines",
    "watch-dispatcher",
    "watch-poller",
    "notify-listener",
    "webhooks",
    "sweep",
    "prune",
}


@pytest.fixture
def own_postgres() -> Iterator[DedicatedPostgres]:
    """A PostgreSQL for this test alone (it is stopped mid-test); deleted after it."""
    server = start_dedicated_postgres()
    yield server
    server.delete()


async def test_postgres_outage(
    tmp_path: Path, own_postgres: DedicatedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await own_postgres.address.create_database()
    seen: list[str] = []
    async with serving(tmp_path, database_url=url, generator_delay_seconds=0.3) as probe:
        ids = [await probe.create(f"before {n}") for n in range(3)]
        await asyncio.to_thread(own_postgres.stop)

        get = g.GetGenerationRequest(id=ids[0])
        await expect_unavailable(
            probe.gens.GetGeneration(get, metadata=probe.auth), "DATABASE_UNAVAILABLE"
        )
        await expect_unavailable(
            probe.gens.CreateGeneration(g.CreateGenerationRequest(prompt="x"), metadata=probe.auth),
            "DATABASE_UNAVAILABLE",
        )
        reply = await probe.http.get(
            f"/api/v1/generations/{ids[0]}", headers={"X-API-Key": probe.auth[0][1]}
        )
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
        await until(probe.not_ready, "readiness false while PostgreSQL is down")
        assert (await probe.http.get("/healthz")).status_code == 200
        # Workers keep trying (backing off) for a while: the outage is logged once.
        await asyncio.sleep(2.0)
        during = logged(capsys, seen)
        assert during.count("dependency_unavailable") == 1, during
        assert "Traceback" not in during and "claim_failed" not in during

        await asyncio.to_thread(own_postgres.start)
        await until(probe.ready, "ready again once PostgreSQL is back")
        assert await probe.serving()
        ids.append(await probe.create("after"))
        await until(lambda: probe.all_succeed(ids), "every generation finished")
        await probe.nothing_lost_or_doubled(ids)
        assert "dependency_recovered" in logged(capsys, seen)
    await own_postgres.address.drop_database(url)


async def test_hung_postgres_answers_unavailable(
    tmp_path: Path, own_postgres: DedicatedPostgres
) -> None:
    url = await own_postgres.address.create_database()
    settings = {"database_url": url, "database_timeout_seconds": 1.0}
    async with serving(tmp_path, **settings) as probe:
        ids = [await probe.create("before the hang")]
        await until(lambda: probe.all_succeed(ids), "the first generation finished")
        with own_postgres.hung():
            # The client waits far longer than the server's own bound: without that bound
            # these calls would end DEADLINE_EXCEEDED (or, without a deadline, never).
            await expect_unavailable(
                probe.gens.GetGeneration(
                    g.GetGenerationRequest(id=ids[0]), metadata=probe.auth, timeout=WAIT_SECONDS
                ),
                "DATABASE_UNAVAILABLE",
            )
            await expect_unavailable(
                probe.gens.CreateGeneration(
                    g.CreateGenerationRequest(prompt="during the hang"),
                    metadata=probe.auth,
                    timeout=WAIT_SECONDS,
                ),
                "DATABASE_UNAVAILABLE",
            )
            reply = await probe.http.get(
                f"/api/v1/generations/{ids[0]}",
                headers={"X-API-Key": probe.auth[0][1]},
                timeout=WAIT_SECONDS,
            )
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
            await until(probe.not_ready, "readiness false while PostgreSQL hangs")
        await until(probe.ready, "ready again once PostgreSQL answers")
        ids.append(await probe.create("after the hang"))
        await until(lambda: probe.all_succeed(ids), "every generation finished")
        # The create refused during the hang left nothing behind (its transaction never
        # got past BEGIN), and nothing else was lost or doubled.
        await probe.nothing_lost_or_doubled(ids)
    await own_postgres.address.drop_database(url)


async def test_stop_with_postgres_hung_keeps_to_the_grace(
    tmp_path: Path, own_postgres: DedicatedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await own_postgres.address.create_database()
    before = asyncio.all_tasks()
    context = serving(tmp_path, database_url=url, shutdown_grace_seconds=1.0)
    probe = await context.__aenter__()
    ids = [await probe.create(f"before the hang {n}") for n in range(4)]
    await until(lambda: probe.all_succeed(ids), "the generations finished")
    with own_postgres.hung():
        # Draining (a claim's rollback) and closing (one polite close per connection)
        # each waited out the 10 s database timeout, over 50 s in all; now each gets its
        # share of the 1 s grace and at most a second more.
        await asyncio.wait_for(context.__aexit__(None, None, None), 8)
    assert "stop_overran" in logged(capsys, [])

    # What the stop did not reach in time is cancelled: none of the App's loops goes on
    # in this event loop (the session's), against a database that is about to go.
    async def none_of_its_loops_left() -> bool:
        started = {task.get_name() for task in asyncio.all_tasks() - before}
        return not started & BACKGROUND_TASKS

    await until(none_of_its_loops_left, "the App's background tasks ended")
    await own_postgres.address.drop_database(url)


class HeardChanges:
    """A hub listener that keeps the generation ids it is told of, and counts the times
    everything is to be read again (the listener does that on each (re)connect)."""

    def __init__(self) -> None:
        self.generations: list[str] = []
        self.everything = 0

    def changed(self, _project_id: str, generation_id: str, _revision: int | None) -> None:
        self.generations.append(generation_id)

    def changed_everywhere(self) -> None:
        self.everything += 1

    @property
    def watcher_count(self) -> int:
        return 0


async def test_a_listen_connection_gone_silent_is_replaced(postgres_server: Postgres) -> None:
    """The network drops every byte of the LISTEN connection and resets nothing (a
    partition, a failover): the listener's liveness check notices, it connects afresh, and
    other replicas' changes are heard again without the poller."""
    url = await postgres_server.create_database()
    proxy = SilentProxy(postgres_server.socket_path)
    port = await proxy.start()
    through_proxy = url.split("?", 1)[0] + f"?host=127.0.0.1&port={port}"
    hub = EventHub()
    heard = HeardChanges()
    hub.add_listener(heard)
    listener = NotifyListener(through_proxy, hub, timeout_seconds=1.0, liveness_seconds=0.2)
    other_replica = await asyncpg.connect(asyncpg_dsn(url))

    async def other_replica_changes(generation_id: str) -> None:
        await other_replica.execute(f"NOTIFY {CHANNEL}, 'p {generation_id} running 2'")

    listener.start()
    try:
        await until(holds(lambda: heard.everything == 1), "the listener connected")
        await other_replica_changes("g-before")
        await until(holds(lambda: "g-before" in heard.generations), "a change heard")
        assert proxy.go_silent() == 1
        await other_replica_changes("g-lost")  # the silent connection's: lost on the way
        await until(holds(lambda: heard.everything == 2), "the listener connected afresh")
        await other_replica_changes("g-after")
        await until(holds(lambda: "g-after" in heard.generations), "a change heard again")
        assert "g-lost" not in heard.generations  # but read again: everything was, above
    finally:
        await listener.stop()
        await other_replica.close()
        await proxy.close()
        await postgres_server.drop_database(url)


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """``predicate`` as a check for ``until``."""

    async def check() -> bool:
        return predicate()

    return check


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_database_refusing_a_statement_is_no_outage(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A reachable database that refuses what it is asked (here a table gone from under
    # the server: "no such table", which sqlite3 calls an OperationalError like a file it
    # cannot open; PostgreSQL's 42P01) is this server's fault, not an outage: INTERNAL
    # with a traceback in the log, never UNAVAILABLE, and readiness is untouched; the
    # background loops (here the webhook dispatcher) log it too, rather than count it.
    settings: dict[str, Any] = {}
    if backend == "postgresql":
        server: Postgres = request.getfixturevalue("postgres_server")
        settings["database_url"] = url = await server.create_database()

        async def execute(statement: str) -> None:
            connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            try:
                await connection.execute(statement)
            finally:
                await connection.close()
    else:

        async def execute(statement: str) -> None:
            with sqlite3.connect(tmp_path / "data" / "imagegen.db") as connection:
                connection.execute(statement)

    seen: list[str] = []
    async with serving(tmp_path, **settings) as probe:
        listing = image_pb2.ListImagesRequest(limit=5)
        await probe.images.ListImages(listing, metadata=probe.auth)
        await execute("ALTER TABLE images RENAME TO images_away")
        # The webhook dispatcher polls its outbox: it meets the same kind of error.
        await execute("ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await probe.images.ListImages(listing, metadata=probe.auth)
            assert caught.value.code() == grpc.StatusCode.INTERNAL, caught.value
            reply = await probe.http.get("/api/v1/images", headers={"X-API-Key": probe.auth[0][1]})
            assert reply.status_code == 500, reply.text
            assert await probe.ready() and await probe.serving()
            during = logged(capsys, seen)
            assert "rpc_failed" in during and "Traceback" in during

            async def dispatcher_logged_it() -> bool:
                return "webhook_claim_failed" in logged(capsys, seen)

            await until(dispatcher_logged_it, "the webhook dispatcher logged its failed claim")
            during = logged(capsys, seen)
            assert "dependency_unavailable" not in during and "DATABASE_UNAVAILABLE" not in during
        finally:
            await execute("ALTER TABLE images_away RENAME TO images")
            await execute("ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries")
        await probe.images.ListImages(listing, metadata=probe.auth)
    if backend == "postgresql":
        await server.drop_database(url)


@pytest.fixture
def own_seaweedfs(tmp_path: Path) -> Iterator[list[SeaweedFS]]:
    """A SeaweedFS for this test alone (stopped mid-test); the list holds the running one."""
    servers = [start_seaweedfs(tmp_path / "weed")]
    yield servers
    with contextlib.suppress(ProcessLookupError):
        os.kill(servers[-1].process.pid, signal.SIGCONT)
    servers[-1].stop()


def picture() -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), "teal").save(buffer, "PNG")
    return buffer.getvalue()


def s3_settings(server: SeaweedFS) -> dict[str, Any]:
    return {
        "s3_endpoint": server.endpoint,
        "s3_access_key": server.access_key,
        "s3_secret_key": server.secret_key,
        "s3_bucket": "outage",
        "storage_timeout_seconds": 2.0,
    }


async def test_seaweedfs_outage(
    tmp_path: Path, own_seaweedfs: list[SeaweedFS], capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []
    weed = own_seaweedfs[0]
    async with serving(tmp_path, generator_delay_seconds=0.3, **s3_settings(weed)) as probe:
        first = await probe.create("before the outage")
        await until(lambda: probe.all_succeed([first]), "the first generation finished")
        image_id = (
            await probe.gens.GetGeneration(g.GetGenerationRequest(id=first), metadata=probe.auth)
        ).output_image.id
        ids = [first, *[await probe.create(f"during {n}") for n in range(2)]]
        await asyncio.to_thread(weed.stop)

        upload = image_pb2.UploadImageRequest(content=picture(), mime_type="image/png")
        await expect_unavailable(
            probe.images.UploadImage(upload, metadata=probe.auth), "STORAGE_UNAVAILABLE"
        )
        read = probe.images.ReadImageContent(
            image_pb2.ReadImageContentRequest(id_or_alias=image_id), metadata=probe.auth
        )

        async def drain() -> None:
            async for _ in read:
                pass

        await expect_unavailable(drain(), "STORAGE_UNAVAILABLE")
        content = await probe.http.get(
            f"/api/v1/images/{image_id}/content", headers={"X-API-Key": probe.auth[0][1]}
        )
        assert content.status_code == 503, content.text
        await until(probe.not_ready, "readiness false while SeaweedFS is down")
        # Metadata calls that need no stored bytes still work.
        await probe.gens.GetGeneration(g.GetGenerationRequest(id=first), metadata=probe.auth)
        await asyncio.sleep(1.0)
        during = logged(capsys, seen)
        assert during.count("dependency_unavailable") == 1, during
        assert "generation_run_failed" not in during and "Traceback" not in during

        own_seaweedfs.append(await asyncio.to_thread(restart_seaweedfs, weed))
        await until(probe.ready, "ready again once SeaweedFS is back")
        ids.append(await probe.create("after"))
        await until(lambda: probe.all_succeed(ids), "every generation finished")
        await probe.nothing_lost_or_doubled(ids)


# Backoff of the long-outage test: first delay and cap (seconds), tries per run.
FIRST_DELAY, MAX_DELAY, TRIES = 0.1, 1.0, 3


def least_seconds_between_runs(run: int) -> float:
    """The least time from the start of a generation's run number ``run`` (1: its first)
    to the start of the next while the store is down: the store tries' jittered delays
    and the hand-back's, each at least half its ceiling (server/domain/backoff.py)."""
    tries = sum(backoff.ceiling(n, FIRST_DELAY, MAX_DELAY) / 2 for n in range(TRIES - 1))
    return tries + backoff.ceiling(TRIES + run - 1, FIRST_DELAY, MAX_DELAY) / 2


async def test_long_seaweedfs_outage_backs_off(
    tmp_path: Path, own_seaweedfs: list[SeaweedFS], capsys: pytest.CaptureFixture[str]
) -> None:
    # Down for several times the longest delay: generations whose picture cannot be stored
    # are handed back and claimed again, each at a bounded rate, and none is lost, failed
    # or doubled when the store is back.
    seen: list[str] = []
    weed = own_seaweedfs[0]
    settings = {
        **s3_settings(weed),
        "generator_delay_seconds": 0.05,
        "retry_backoff_seconds": FIRST_DELAY,  # the same as serving()'s, said here
        "retry_backoff_max_seconds": MAX_DELAY,
        "max_attempts": TRIES,
        "workers": 4,
    }
    async with serving(tmp_path, **settings) as probe:
        await asyncio.to_thread(weed.stop)
        stopped = time.monotonic()
        ids = [await probe.create(f"during {n}") for n in range(6)]
        runs: dict[str, int] = {}

        async def each_retried() -> bool:
            # More generations than workers: each is run again, none waits for the store
            # while the others hold every worker (claims go by time waited).
            for generation_id in ids:
                got = await probe.gens.GetGeneration(
                    g.GetGenerationRequest(id=generation_id), metadata=probe.auth
                )
                assert got.status != g.GENERATION_STATUS_FAILED, got
                runs[generation_id] = got.attempt
            return min(runs.values()) >= 2

        await until(each_retried, "every generation retried while the store is down")
        # Long enough for the hand-back delays to reach their ceiling.
        await asyncio.sleep(max(0.0, stopped + 8 * MAX_DELAY - time.monotonic()))
        await each_retried()
        # The outage as logged while it lasted: once, however many calls failed. (After
        # the restart a loaded machine may see a store call time out: a new, short
        # outage, logged as one.)
        during = logged(capsys, seen)
        own_seaweedfs.append(await asyncio.to_thread(restart_seaweedfs, weed))
        down = time.monotonic() - stopped
        await until(probe.ready, "ready again once SeaweedFS is back")
        await until(lambda: probe.all_succeed(ids), "every generation finished")
        await probe.nothing_lost_or_doubled(ids)
        # The most runs a generation could start in ``down`` seconds at the least spacing.
        bound, spent = 1, 0.0
        while spent + least_seconds_between_runs(bound) <= down:
            spent += least_seconds_between_runs(bound)
            bound += 1
        for generation_id in ids:
            final = (
                await probe.gens.GetGeneration(
                    g.GetGenerationRequest(id=generation_id), metadata=probe.auth
                )
            ).attempt
            # Never retried faster than the backoff allows; one more run at most once the
            # store is back.
            assert runs[generation_id] <= bound, (runs, bound, down)
            assert final <= bound + 1, (final, bound, down)
        assert during.count("dependency_unavailable") == 1, during
        assert "Traceback" not in logged(capsys, seen)


async def test_hung_seaweedfs_answers_unavailable(
    tmp_path: Path, own_seaweedfs: list[SeaweedFS]
) -> None:
    weed = own_seaweedfs[0]
    async with serving(tmp_path, **s3_settings(weed)) as probe:
        first = await probe.create("before the hang")
        await until(lambda: probe.all_succeed([first]), "the first generation finished")
        image_id = (
            await probe.gens.GetGeneration(g.GetGenerationRequest(id=first), metadata=probe.auth)
        ).output_image.id
        os.kill(weed.process.pid, signal.SIGSTOP)
        try:
            read = probe.images.ReadImageContent(
                image_pb2.ReadImageContentRequest(id_or_alias=image_id),
                metadata=probe.auth,
                timeout=WAIT_SECONDS,  # the server's own timeout answers long before this
            )

            async def drain() -> None:
                async for _ in read:
                    pass

            await expect_unavailable(drain(), "STORAGE_UNAVAILABLE")
            await until(probe.not_ready, "readiness false while SeaweedFS hangs")
        finally:
            os.kill(weed.process.pid, signal.SIGCONT)
        await until(probe.ready, "ready again once SeaweedFS answers")
        chunks = probe.images.ReadImageContent(
            image_pb2.ReadImageContentRequest(id_or_alias=image_id), metadata=probe.auth
        )
        assert b"".join([chunk.data async for chunk in chunks])


async def test_a_hung_store_holds_stored_runs_not_generator_slots(
    tmp_path: Path, own_seaweedfs: list[SeaweedFS]
) -> None:
    # A run's slot (IMAGEGEN_WORKERS) is its generator call. With one worker and the
    # store hung, the first picture waits to be stored while the second generation is
    # generated; then both wait and the third is not claimed: at most as many runs
    # store at once as generate, so finished pictures cannot pile up in memory.
    weed = own_seaweedfs[0]
    store = {**s3_settings(weed), "storage_timeout_seconds": 30.0}
    async with serving(tmp_path, workers=1, **store) as probe:
        warm = await probe.create("before the hang")
        await until(lambda: probe.all_succeed([warm]), "the first generation finished")
        os.kill(weed.process.pid, signal.SIGSTOP)
        try:
            ids = [await probe.create(f"a heron, number {n}") for n in range(3)]

            async def statuses() -> list[int]:
                return [
                    (
                        await probe.gens.GetGeneration(
                            g.GetGenerationRequest(id=generation_id), metadata=probe.auth
                        )
                    ).status
                    for generation_id in ids
                ]

            two_storing = [g.GENERATION_STATUS_PROCESSING] * 2 + [g.GENERATION_STATUS_PENDING]

            async def second_generated() -> bool:
                return await statuses() == two_storing

            await until(second_generated, "the second generated while the first is stored")
            await asyncio.sleep(1.0)  # the third stays unclaimed
            assert await statuses() == two_storing
        finally:
            os.kill(weed.process.pid, signal.SIGCONT)
        await until(lambda: probe.all_succeed(ids), "all three stored once SeaweedFS answers")
        await probe.nothing_lost_or_doubled([warm, *ids])
