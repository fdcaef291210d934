"""The composition root: builds every part from Settings, and owns start and stop."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, Final

import structlog

from server.api.admin import AdminServicer
from server.api.admission import Admission
from server.api.auth import KeyAuthenticator
from server.api.convert.resources import Resources
from server.api.delivery import DeliveryServicer
from server.api.flows import FlowServicer
from server.api.generations import GenerationServicer
from server.api.images import ImageServicer
from server.api.interceptors import CallInterceptor
from server.api.live import LiveServicer
from server.api.projects import ProjectServicer
from server.api.server import (
    OPEN_CALL_HEADROOM,
    Keepalive,
    Servicers,
    create_server,
    set_serving,
)
from server.blobs.base import BlobRefusedError, BlobStore, probe
from server.config import Settings, SettingsError
from server.domain.generations import Generation
from server.domain.models import LOCAL, ModelCatalog, ModelRef, parse_model
from server.domain.outages import DATABASE, OBJECT_STORE
from server.domain.signing import UrlSigner
from server.engine.enhancers.llm import (
    DEFAULT_MODELS,
    ClosableEnhancer,
    FallbackEnhancer,
    GeminiEnhancer,
    OpenAIEnhancer,
)
from server.engine.enhancers.template import TemplateEnhancer
from server.engine.generators.base import Enhancer, Generator
from server.engine.generators.draw_processes import DrawProcesses
from server.engine.generators.local import LocalGenerator
from server.engine.generators.registry import GeneratorRegistry
from server.engine.pruner import Pruner
from server.engine.sweeper import Sweeper
from server.engine.webhooks import Dispatcher, DispatchSettings
from server.engine.worker import Engine, EngineSettings
from server.events.hub import EventHub
from server.events.listener import NotifyListener
from server.gateway import GatewayServer, create_gateway, serve_gateway
from server.gateway.processes import (
    ChildOptions,
    GatewayProcesses,
    metrics_socket_name,
    serve_metrics,
)
from server.gateway.responses import render
from server.gateway.serving import bind
from server.metrics import Metrics, metrics_route
from server.secrets import (
    GATEWAY_TOKEN_FILE,
    URL_SIGNING_SECRET_FILE,
    stored_secret,
    write_private,
)
from server.services.delivery import Delivery
from server.services.flows import Flows
from server.services.generations import Generations
from server.services.images import Images
from server.services.live import Live, LiveSettings
from server.services.tenancy import Tenancy
from server.services.watch import Watches
from server.services.webhooks import Deliveries
from server.store.db import Database
from server.store.migrate import upgrade
from server.store.outages import Dependencies, database_probe, outage_of

log = structlog.get_logger("imagegen.app")

# At stop: how far past its share of the grace draining, or closing connections, may run.
STOP_OVERRUN_SECONDS: Final = 1.0


async def _bounded(step: Coroutine[Any, Any, None], seconds: float, name: str) -> bool:
    """Run one part of a stop for at most ``seconds``; past that it is abandoned (the
    process is about to end) with a warning, and False is returned."""
    try:
        async with asyncio.timeout(seconds) as bound:
            await step
    except TimeoutError:
        if not bound.expired():
            raise
        log.warning("stop_overran", part=name, seconds=round(seconds, 3))
        return False
    return True


def build_blob_store(settings: Settings) -> BlobStore:
    """The S3 store when an endpoint is set, else the local directory store."""
    if settings.s3_endpoint:
        from server.blobs.s3 import S3BlobStore

        return S3BlobStore(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            bucket=settings.s3_bucket,
            region=settings.s3_region or None,
            secure=settings.s3_secure,
            public_endpoint=settings.s3_public_endpoint,
            call_timeout_seconds=settings.storage_timeout_seconds,
        )
    from server.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.images_dir)


def engine_settings(settings: Settings) -> EngineSettings:
    """The part of the settings the engine reads."""
    return EngineSettings(
        workers=settings.workers,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        retry_backoff_seconds=settings.retry_backoff_seconds,
        poll_interval_seconds=settings.poll_interval_seconds,
        claim_batch=settings.claim_batch,
        retry_backoff_max_seconds=settings.retry_backoff_max_seconds,
    )


def build_registry(
    settings: Settings, local: Generator | None = None, draw_pool: Executor | None = None
) -> GeneratorRegistry:
    """``local`` always (drawing on ``draw_pool``); ``openai`` and ``gemini`` when their keys
    are set."""
    generators: dict[str, Generator] = {
        LOCAL: local
        or LocalGenerator(
            image_format=settings.generator_format,
            delay_seconds=settings.generator_delay_seconds,
            fail_mode=settings.generator_fail_mode,
            executor=draw_pool,
            max_side=settings.generator_max_side,
        )
    }
    openai_key = settings.openai_api_key.get_secret_value()
    gemini_key = settings.gemini_api_key.get_secret_value()
    if openai_key:
        from server.engine.generators.openai import OpenAIGenerator

        generators["openai"] = OpenAIGenerator(
            api_key=openai_key,
            base_url=settings.openai_base_url,
            timeout=settings.provider_timeout_seconds,
        )
    if gemini_key:
        from server.engine.generators.gemini import GeminiGenerator

        generators["gemini"] = GeminiGenerator(
            api_key=gemini_key,
            base_url=settings.gemini_base_url,
            timeout=settings.provider_timeout_seconds,
        )
    return GeneratorRegistry(
        generators,
        timeout_seconds=settings.provider_timeout_seconds,
        secrets=(openai_key, gemini_key),
    )


def model_catalog(settings: Settings) -> ModelCatalog:
    """The deployment's default model and offered providers; SettingsError if the default is not."""
    offered = {LOCAL}
    if settings.openai_api_key.get_secret_value():
        offered.add("openai")
    if settings.gemini_api_key.get_secret_value():
        offered.add("gemini")
    try:
        default: ModelRef = parse_model(settings.default_model or LOCAL)
    except ValueError as exc:
        raise SettingsError(f"IMAGEGEN_DEFAULT_MODEL: {exc}") from None
    if default.provider not in offered:
        raise SettingsError(
            f"IMAGEGEN_DEFAULT_MODEL is {default}, but IMAGEGEN_{default.provider.upper()}_API_KEY "
            "is not set"
        )
    return ModelCatalog(default, frozenset(offered))


def build_enhancer(settings: Settings) -> Enhancer:
    """The configured enhancer: template, or an LLM one backed by the template enhancer."""
    choice = settings.enhancer
    if choice == "template":
        return TemplateEnhancer()
    model = settings.enhancer_model or DEFAULT_MODELS[choice]
    timeout = settings.provider_timeout_seconds
    primary: ClosableEnhancer
    if choice == "openai":
        key = settings.openai_api_key.get_secret_value()
        if not key:
            raise SettingsError(
                "IMAGEGEN_ENHANCER is openai, but IMAGEGEN_OPENAI_API_KEY is not set"
            )
        primary = OpenAIEnhancer(
            api_key=key, base_url=settings.openai_base_url, model=model, timeout=timeout
        )
    else:
        key = settings.gemini_api_key.get_secret_value()
        if not key:
            raise SettingsError(
                "IMAGEGEN_ENHANCER is gemini, but IMAGEGEN_GEMINI_API_KEY is not set"
            )
        primary = GeminiEnhancer(
            api_key=key, base_url=settings.gemini_base_url, model=model, timeout=timeout
        )
    return FallbackEnhancer(primary, timeout)


def dispatch_settings(settings: Settings) -> DispatchSettings:
    """The part of the settings the webhook dispatcher reads."""
    return DispatchSettings(
        concurrency=settings.webhook_senders,
        poll_interval_seconds=settings.poll_interval_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        max_response_bytes=settings.webhook_max_response_bytes,
        first_retry_seconds=settings.webhook_first_retry_seconds,
        max_retry_seconds=settings.webhook_max_retry_seconds,
        retry_window_seconds=settings.webhook_retry_window_seconds,
        allow_private_addresses=settings.webhook_allow_private_addresses,
    )


def webhook_body(resources: Resources) -> Callable[[str, Generation], str]:
    """Renders a webhook body: the event type and the Generation as the REST API shows it."""

    def body(event_type: str, generation: Generation) -> str:
        data = render(resources.generation(generation))
        return json.dumps({"type": event_type, "data": data}, separators=(",", ":"))

    return body


def public_base_url(settings: Settings) -> str:
    """Where clients reach the HTTP side (image URLs hang from it)."""
    if settings.public_base_url:
        return settings.public_base_url
    host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.http_port}"


class StartupError(Exception):
    """The process cannot serve (say, a port is taken); the message says why, for people."""


def _cannot_start(error: Exception) -> StartupError | None:
    """A StartupError if ``error`` says a dependency cannot be reached (the process exits
    with the reason on one line, and its supervisor starts it again) or the object store
    refuses this deployment's keys; None otherwise."""
    if isinstance(error, BlobRefusedError):
        return StartupError(str(error))
    dependency = outage_of(error)
    if dependency is None:
        return None
    name = "database" if dependency == DATABASE else "object store"
    return StartupError(f"the {name} cannot be reached at start: {error}")


class App:
    """One imagegen process: database, image store, workers, gRPC (and HTTP) servers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.grpc_port = 0
        self.http_port = 0
        self.http_server: GatewayServer | None = None
        # With IMAGEGEN_GATEWAY_PROCESSES: the gateway's processes and what they share.
        self.gateway_processes: GatewayProcesses | None = None
        self._http_socket: socket.socket | None = None
        self._metrics_relay: asyncio.Server | None = None
        # Where the in-process gateway reaches the gRPC server (set by start()).
        self.gateway_target: str | None = None
        self.dev_api_key: str | None = None
        self.dev_key_path = settings.data_dir / "dev-api-key"

    async def start(self) -> None:
        """Migrate, wire the parts, start serving; returns once the port is open."""
        settings = self.settings
        # Model settings first: a default model without its key stops here, before any work.
        catalog = model_catalog(settings)
        # Drawing is CPU work: a few threads, however many generations run at once.
        self.draw_pool: Executor = (
            DrawProcesses(settings.draw_processes)
            if settings.draw_processes
            else ThreadPoolExecutor(settings.draw_threads, thread_name_prefix="draw")
        )
        self.generators = build_registry(settings, draw_pool=self.draw_pool)
        self.enhancer = build_enhancer(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(
            settings.resolved_database_url, timeout_seconds=settings.database_timeout_seconds
        )
        try:
            async with self.db.migrating() as engine:
                await upgrade(engine)
            # Bootstrap helpers (and tests) take a session factory; the writer's.
            self.sessions = self.db.write
            self.tenancy = Tenancy(self.db, key_cache_seconds=settings.api_key_cache_seconds)
            if settings.dev_project:
                await self._ensure_dev_project()
            self.blobs = build_blob_store(settings)
            await self.blobs.ensure_ready()
        except Exception as error:
            # Nothing else runs yet: what start opened is closed, and the reason shown.
            await self._abandon()
            startup = _cannot_start(error)
            if startup is None:
                raise
            raise startup from None
        self.hub = EventHub()
        # A key revoked on another replica (its NOTIFY) leaves this one's key cache at once.
        self.hub.add_key_listener(self.tenancy.forget_key)
        self.metrics = Metrics()
        self.dependencies = Dependencies(
            {DATABASE: database_probe(self.db), OBJECT_STORE: partial(probe, self.blobs)},
            interval=settings.readiness_interval_seconds,
            on_change=self._set_ready,
        )
        self.listener: NotifyListener | None = None
        if not self.db.is_sqlite and settings.watch_listen_notify:
            # Other replicas' changes arrive as NOTIFYs; SQLite has one process.
            self.listener = NotifyListener(
                settings.resolved_database_url,
                self.hub,
                timeout_seconds=settings.database_timeout_seconds,
            )
            self.listener.start()
        self.generations = Generations(
            self.db,
            self.blobs,
            self.hub,
            catalog,
            webhook_allow_private=settings.webhook_allow_private_addresses,
            create_batch_wait=settings.create_batch_wait_ms / 1000,
        )
        self.url_signer = UrlSigner(
            stored_secret(
                settings.url_signing_secret, settings.data_dir / URL_SIGNING_SECRET_FILE
            ).encode()
        )
        self.gateway_token = stored_secret(
            settings.gateway_token, settings.data_dir / GATEWAY_TOKEN_FILE
        )
        self.images = Images(self.db, self.blobs, self.hub, self.url_signer)
        self.delivery = Delivery(self.db, self.blobs, self.url_signer)
        self.flows = Flows(self.db, self.blobs, self.hub, self.generations)
        self.watches = Watches(
            self.db,
            self.hub,
            queue_limit=settings.watch_queue_events,
            poll_seconds=settings.watch_poll_seconds,
        )
        self.watches.start()
        self.admission = Admission(
            settings.max_concurrent_rpcs, settings.max_open_streams, settings.max_streams_per_key
        )
        self.live = Live(
            self.db,
            self.hub,
            self.generations,
            self.delivery,
            LiveSettings(
                auto_create_scopes=settings.live_auto_create_scopes,
                ip_limit_per_hour=settings.live_ip_limit_per_hour,
                wait_seconds=settings.live_wait_seconds,
                poll_seconds=settings.poll_interval_seconds,
            ),
        )
        self.resources = Resources(public_base_url(settings))
        self.engine = Engine(
            self.db,
            self.blobs,
            self.hub,
            self.generators,
            self.enhancer,
            engine_settings(settings),
            self.metrics,
            self.dependencies,
        )
        servicers = Servicers(
            generations=GenerationServicer(self.generations, self.watches, self.resources),
            images=ImageServicer(self.images, self.resources),
            flows=FlowServicer(self.flows, self.resources),
            admin=AdminServicer(self.tenancy),
            live=LiveServicer(self.live, self.resources),
            delivery=DeliveryServicer(self.delivery, self.live),
            projects=ProjectServicer(self.tenancy, Deliveries(self.db)),
        )
        self.interceptor = CallInterceptor(
            KeyAuthenticator(self.tenancy, settings, self.gateway_token),
            self.metrics,
            admission=self.admission,
            dependencies=self.dependencies,
        )
        try:
            self.server, self.grpc_port, self.health = create_server(
                servicers,
                address=f"{settings.host}:{settings.grpc_port}",
                interceptor=self.interceptor,
                max_calls=settings.max_concurrent_rpcs
                + settings.max_open_streams
                + OPEN_CALL_HEADROOM,
                keepalive=Keepalive(
                    time_seconds=settings.keepalive_time_seconds,
                    timeout_seconds=settings.keepalive_timeout_seconds,
                    permit_without_calls=settings.keepalive_permit_without_calls,
                    min_client_ping_seconds=settings.keepalive_min_client_ping_seconds,
                ),
                max_metadata_bytes=settings.grpc_max_metadata_bytes,
            )
        except OSError as error:
            await self._abandon()
            raise StartupError(str(error)) from None
        self.gateway_target = self._gateway_target() if settings.http_enabled else None
        # grpc's health service starts out SERVING; it says so only once the dependencies
        # have answered (below), not while start() is still under way.
        await set_serving(self.health, False)
        await self.server.start()
        self.engine.start()
        self.sweeper = Sweeper(
            self.db,
            self.blobs,
            timedelta(seconds=settings.sweep_grace_seconds),
            settings.sweep_interval_seconds,
            self.dependencies,
        )
        self.sweeper.start()
        self.pruner = Pruner(
            self.db,
            event_retention=timedelta(seconds=settings.event_retention_seconds),
            request_id_retention=timedelta(seconds=settings.request_id_retention_seconds),
            delivery_retention=timedelta(seconds=settings.webhook_delivery_retention_seconds),
            interval=settings.prune_interval_seconds,
            dependencies=self.dependencies,
        )
        self.pruner.start()
        self.dispatcher = Dispatcher(
            self.db,
            self.hub,
            webhook_body(self.resources),
            dispatch_settings(settings),
            self.dependencies,
        )
        self.dispatcher.start()
        # SERVING once both dependencies answer; NOT_SERVING whenever one stops answering.
        await self.dependencies.check()
        self.dependencies.start()
        if settings.http_enabled:
            try:
                await self._start_gateway()
            except OSError as error:
                await self.stop()
                raise StartupError(str(error)) from None
        log.info(
            "serving", grpc_port=self.grpc_port, http_port=self.http_port, database=self.db.dialect
        )

    def _gateway_target(self) -> str:
        """Where this process's gateway reaches the gRPC server.

        On Linux an abstract Unix socket of this server's own (no file to clean up, and
        no more reachable than the loopback port): each call skips TCP on both ends,
        about 0.04 ms of this process's CPU per REST read. Elsewhere the gRPC port.
        """
        if sys.platform == "linux":
            target = f"unix-abstract:imagegen-{os.getpid()}-{secrets.token_hex(8)}"
            if self.server.add_insecure_port(target):
                return target
        local = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}
        host = local.get(self.settings.host, self.settings.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{host}:{self.grpc_port}"

    async def _start_gateway(self) -> None:
        """The REST gateway, a client of the local gRPC server: in this process, or in
        IMAGEGEN_GATEWAY_PROCESSES processes of its own."""
        if self.settings.gateway_processes > 0:
            await self._start_gateway_processes()
        else:
            await self._start_gateway_here()
        if self.settings.http_port == 0 and not self.settings.public_base_url:
            # Image URLs were built before the port was known.
            bound = self.settings.model_copy(update={"http_port": self.http_port})
            self.resources.base_url = public_base_url(bound).rstrip("/")

    async def _start_gateway_processes(self) -> None:
        settings = self.settings
        assert self.gateway_target is not None
        self._http_socket = bind(settings.host, settings.http_port)
        self.http_port = int(self._http_socket.getsockname()[1])
        name = metrics_socket_name()
        self._metrics_relay = await serve_metrics(name, self.metrics.render)
        # What a child reads from its environment; the rest of this one's it inherits.
        env = {
            "IMAGEGEN_HOST": settings.host,
            "IMAGEGEN_GATEWAY_TOKEN": self.gateway_token,
            "IMAGEGEN_TRUSTED_PROXIES": settings.trusted_proxies,
            "IMAGEGEN_HTTP_READ_TIMEOUT_SECONDS": str(settings.http_read_timeout_seconds),
            "IMAGEGEN_SHUTDOWN_GRACE_SECONDS": str(settings.shutdown_grace_seconds),
            "IMAGEGEN_LOG_LEVEL": settings.log_level,
            "IMAGEGEN_LOG_FORMAT": settings.log_format,
            "IMAGEGEN_DATA_DIR": str(settings.data_dir),
        }
        processes = GatewayProcesses(
            self._http_socket,
            settings.gateway_processes,
            ChildOptions(target=self.gateway_target, metrics_socket=name, env=env),
        )
        try:
            await processes.start()
        except BaseException:
            await self._close_gateway_shares()
            raise
        self.gateway_processes = processes
        log.info("gateway_processes_started", pids=processes.pids)

    async def _close_gateway_shares(self) -> None:
        """Close the HTTP socket and the metrics relay the gateway processes used."""
        if self._metrics_relay is not None:
            self._metrics_relay.close()
            await self._metrics_relay.wait_closed()
            self._metrics_relay = None
        if self._http_socket is not None:
            self._http_socket.close()
            self._http_socket = None

    async def _start_gateway_here(self) -> None:
        settings = self.settings
        assert self.gateway_target is not None
        gateway = create_gateway(
            self.gateway_target,
            extra_routes=[metrics_route(self.metrics)],
            gateway_token=self.gateway_token,
            trusted_proxies=settings.trusted_proxies,
        )
        self.http_server, _, self.http_port = await serve_gateway(
            gateway,
            settings.host,
            settings.http_port,
            grace_seconds=settings.shutdown_grace_seconds,
            read_timeout_seconds=settings.http_read_timeout_seconds,
        )

    async def _set_ready(self, ready: bool) -> None:
        log.info("readiness", ready=ready)
        await set_serving(self.health, ready)

    def _stop_drawing(self) -> None:
        """Let the draw threads (or processes) go: queued drawings are dropped (their runs
        are over or handed back), and one in progress is not waited for."""
        self.draw_pool.shutdown(wait=False, cancel_futures=True)

    async def _abandon(self) -> None:
        """Close what start() opened before it failed (nothing was served yet); start may
        have failed before it made the listener or the blob store."""
        self._stop_drawing()
        listener: NotifyListener | None = getattr(self, "listener", None)
        if listener is not None:
            await listener.stop()
        await self.generators.close()
        closer = getattr(self.enhancer, "close", None)
        if closer is not None:
            await closer()
        blobs: BlobStore | None = getattr(self, "blobs", None)
        if blobs is not None:
            await blobs.close()
        await self.db.dispose()

    async def _ensure_dev_project(self) -> None:
        from server.services.tenancy import ensure_dev_project

        key = await ensure_dev_project(self.sessions)
        if key is not None:
            self.dev_api_key = key
            # Whole at once: scripts (and tests) poll for this file and read it at once.
            write_private(self.dev_key_path, key + "\n")
            log.info("dev_project_created", key_file=str(self.dev_key_path))

    async def stop(self) -> None:
        """Drain within SHUTDOWN_GRACE_SECONDS in all: NOT_SERVING, end open streams, finish
        HTTP requests, let running jobs finish (or hand them back) while unary RPCs in
        flight finish, close."""
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace_seconds
        deadline = loop.time() + grace

        def left() -> float:
            return max(0.0, deadline - loop.time())

        await self.dependencies.drain()
        await self.dependencies.stop()
        self.interceptor.drain()
        log.info("draining", grace_seconds=grace)
        # Each part is bounded: its share of the grace and at most STOP_OVERRUN_SECONDS
        # more. Normally none needs the margin. A database that answers nothing does:
        # a job cancelled mid-statement waits out the database timeout to roll back, and
        # a polite close per pooled connection waits for a goodbye that never comes.
        drained = await _bounded(self._drain(left), grace + STOP_OVERRUN_SECONDS, "drain")
        closed = await _bounded(
            self._close_connections(), max(left(), STOP_OVERRUN_SECONDS), "close"
        )
        if not (drained and closed):
            self._cancel_what_is_left()
        log.info("stopped")

    def _cancel_what_is_left(self) -> None:
        """What a stop out of time did not reach: every background task is cancelled, not
        awaited, so that none goes on in this loop (an embedding program's, a test's)
        against dependencies that may be gone; and the read connections held out of the
        pool are cut rather than left checked out, and open, until exit."""
        for part in (self.engine, self.dispatcher, self.sweeper, self.pruner, self.watches):
            part.abandon()
        self._stop_drawing()
        if self.listener is not None:
            self.listener.abandon()
        self.db.abandon()

    async def _drain(self, left: Callable[[], float]) -> None:
        # First, while the gRPC side still answers the requests it has in flight.
        if self.http_server is not None:
            await self.http_server.stop(left())
        if self.gateway_processes is not None:
            await self.gateway_processes.stop(left())
            self.gateway_processes = None
        await self._close_gateway_shares()
        await self.sweeper.stop()
        await self.pruner.stop()
        # One deadline for both: jobs and RPCs drain side by side.
        await asyncio.gather(self.engine.stop(left()), self.server.stop(left()))
        await self.dispatcher.stop()
        self._stop_drawing()

    async def _close_connections(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        await self.generators.close()
        closer = getattr(self.enhancer, "close", None)
        if closer is not None:
            await closer()
        await self.watches.stop()
        await self.blobs.close()
        await self.db.dispose()
