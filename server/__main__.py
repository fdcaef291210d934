"""The server's commands: serve, gateway, admin, healthcheck (run by the `imagegen` launcher).

The launcher (imagegen_client.launcher) finds them through the
`imagegen.commands` entry points this distribution registers in pyproject.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.config import Settings
from server.domain.tasks import cancel_and_wait
from server.heap import refresh_forever, settle
from server.logs import configure_logging

# `serve` and `gateway` exit with this when they cannot start serving (a port in use).
EXIT_CANNOT_SERVE = 3


def build_parser() -> argparse.ArgumentParser:
    """Flags of the server-side commands; each also has an IMAGEGEN_* variable."""
    parser = argparse.ArgumentParser(
        prog="imagegen",
        description="The imagegen service (client commands: `imagegen -h`).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service (and the REST gateway)")
    serve.add_argument("--host", help="bind address (IMAGEGEN_HOST, default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (IMAGEGEN_GRPC_PORT, 50051)")
    http = serve.add_mutually_exclusive_group()
    http.add_argument("--http-port", type=int, help="HTTP port (IMAGEGEN_HTTP_PORT, 8080)")
    http.add_argument("--no-http", action="store_true", help="serve gRPC only")
    serve.add_argument("--data-dir", type=Path, help="data directory (IMAGEGEN_DATA_DIR, ./data)")

    gateway = sub.add_parser(
        "gateway",
        help="run the REST gateway alone, in front of a gRPC server",
        description="Serve the REST gateway (JSON over HTTP, /openapi.json) for the gRPC "
        "API at --target; it keeps no state of its own.",
    )
    gateway.add_argument("--target", help="host:port of the gRPC API (default 127.0.0.1:50051)")
    gateway.add_argument("--host", help="bind address (IMAGEGEN_HOST, default 127.0.0.1)")
    gateway.add_argument("--http-port", type=int, help="HTTP port (IMAGEGEN_HTTP_PORT, 8080)")
    # Set by `imagegen serve` for the gateway processes it starts (server/gateway/processes.py).
    gateway.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    gateway.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    gateway.add_argument("--metrics-from", help=argparse.SUPPRESS)
    gateway.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)

    admin = sub.add_parser(
        "admin",
        help="administration against the configured database",
        description="Administration against the configured database. Projects and API keys "
        "are managed through the API: `imagegen projects …`, `imagegen keys …`.",
    )
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    boot = admin_sub.add_parser("bootstrap", help="print the first admin key (once)")
    boot.add_argument("--data-dir", type=Path, help="data directory (IMAGEGEN_DATA_DIR)")
    check = sub.add_parser("healthcheck", help="exit 0 if the local server reports SERVING")
    check.add_argument("--address", help="host:port (default 127.0.0.1:IMAGEGEN_GRPC_PORT)")
    return parser


def healthcheck(settings: Settings, address: str | None) -> int:
    """Ask grpc.health.v1 whether the server is SERVING (the container health check)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = address or f"127.0.0.1:{settings.grpc_port}"
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as error:
            print(f"imagegen: {target}: {error.code().name}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if serving else 1


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings with the command-line flags laid over them."""
    overrides: dict[str, Any] = {}
    for flag, field in (
        ("host", "host"),
        ("grpc_port", "grpc_port"),
        ("http_port", "http_port"),
        ("data_dir", "data_dir"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    if getattr(args, "no_http", False):
        overrides["http_enabled"] = False
    return Settings(**overrides)


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain within the grace period."""
    from server.app import App, StartupError

    app = App(settings)
    # Before start: a SIGTERM while starting stops the server once it has started (its
    # gateway processes and jobs shut down in order) instead of killing it half-way.
    stop = signalled()
    try:
        await app.start()
    except StartupError as error:
        print(f"imagegen: {error}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_SERVE
    if app.dev_api_key:
        print(
            f"Created project 'default'. Its API key (also in {app.dev_key_path}):\n"
            f"  {app.dev_api_key}",
            flush=True,
        )
    print(f"imagegen serving gRPC on {settings.host}:{app.grpc_port}", flush=True)
    if settings.http_enabled:
        print(f"imagegen serving HTTP on {settings.host}:{app.http_port}", flush=True)
    async with settled_heap():
        await until_signalled(stop)
    await app.stop()
    return 0


@contextlib.asynccontextmanager
async def settled_heap() -> AsyncIterator[None]:
    """Long-lived objects kept out of the collector's walks while serving (server/heap.py).

    What starting up made is frozen first: it lives as long as the process, and each
    full collection walked all of it again (about 5 % of a GetGeneration's server CPU,
    measured A/B)."""
    settle()
    refresher = asyncio.create_task(refresh_forever())
    try:
        yield
    finally:
        # Left settled: the process is about to end, and a full walk now would be waste.
        await cancel_and_wait(refresher)


def signalled() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT from now on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_signalled(stop: asyncio.Event, parent_pid: int | None = None) -> None:
    """Return once ``stop`` is set (or once the process ``parent_pid`` is gone)."""
    from server.gateway.processes import leave_with_parent

    watcher = (
        None if parent_pid is None else asyncio.create_task(leave_with_parent(parent_pid, stop.set))
    )
    await stop.wait()
    if watcher is not None:
        await cancel_and_wait(watcher)


async def gateway(settings: Settings, args: argparse.Namespace) -> int:
    """Run the REST gateway alone until SIGTERM or SIGINT (or, as one of `imagegen serve`'s
    gateway processes, until its parent is gone)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from server.gateway import create_gateway, serve_gateway
    from server.gateway.processes import relayed_metrics_route
    from server.secrets import GATEWAY_TOKEN_FILE, stored_secret

    target = args.target or f"127.0.0.1:{settings.grpc_port}"
    # Beside the server on one data dir, the token the server generated is found there.
    token = stored_secret(
        settings.gateway_token, settings.data_dir / GATEWAY_TOKEN_FILE, create=False
    )
    # As one of serve's gateway processes: /metrics is the server's, relayed.
    metrics = [relayed_metrics_route(args.metrics_from, CONTENT_TYPE_LATEST)]
    app = create_gateway(
        target,
        extra_routes=metrics if args.metrics_from else (),
        gateway_token=token,
        trusted_proxies=settings.trusted_proxies,
    )
    stop = signalled()
    sock = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    try:
        server, _, port = await serve_gateway(
            app,
            settings.host,
            settings.http_port,
            sock=sock,
            grace_seconds=settings.shutdown_grace_seconds,
            read_timeout_seconds=settings.http_read_timeout_seconds,
        )
    except OSError as error:
        print(f"imagegen: {error}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_SERVE
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    else:
        print(f"imagegen gateway serving HTTP on {settings.host}:{port} for {target}", flush=True)
    async with settled_heap():
        await until_signalled(stop, args.parent_pid)
    await server.stop()
    return 0


async def bootstrap(settings: Settings) -> int:
    """Print a new admin key if none exists yet."""
    from server.domain.errors import DomainError
    from server.services.tenancy import bootstrap_admin
    from server.store.db import create_engine, session_factory
    from server.store.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
        try:
            key = await bootstrap_admin(session_factory(engine))
        except DomainError as error:
            print(f"imagegen: {error.message}", file=sys.stderr)
            return 1
        print(key)
        return 0
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Run one server command; ``argv`` starts with its name (the launcher passes it so)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        from server.config import SettingsError

        try:
            return asyncio.run(serve(settings))
        except SettingsError as error:
            print(f"imagegen: {error}", file=sys.stderr)
            return 2
    if args.command == "gateway":
        return asyncio.run(gateway(settings, args))
    if args.command == "healthcheck":
        return healthcheck(settings, args.address)
    return asyncio.run(bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
