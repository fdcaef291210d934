"""The `imagegen` command: `serve`, `admin`, and (from the SDK) the client commands."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from server.config import Settings
from server.logs import configure_logging

SERVER_COMMANDS = ("serve", "admin", "healthcheck")


def build_parser() -> argparse.ArgumentParser:
    """Flags of the server-side commands; each also has an IMAGEGEN_* variable."""
    parser = argparse.ArgumentParser(prog="imagegen", description="The imagegen service.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service (and the REST gateway)")
    serve.add_argument("--host", help="bind address (IMAGEGEN_HOST, default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (IMAGEGEN_GRPC_PORT, 50051)")
    http = serve.add_mutually_exclusive_group()
    http.add_argument("--http-port", type=int, help="HTTP port (IMAGEGEN_HTTP_PORT, 8080)")
    http.add_argument("--no-http", action="store_true", help="serve gRPC only")
    serve.add_argument("--data-dir", type=Path, help="data directory (IMAGEGEN_DATA_DIR, ./data)")

    admin = sub.add_parser("admin", help="administration against the configured database")
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


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain within the grace period."""
    from server.app import App

    app = App(settings)
    await app.start()
    if app.dev_api_key:
        print(
            f"Created project 'default'. Its API key (also in {app.dev_key_path}):\n"
            f"  {app.dev_api_key}",
            flush=True,
        )
    print(f"imagegen serving gRPC on {settings.host}:{app.grpc_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.stop()


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
    """Entry point of the `imagegen` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        asyncio.run(serve(settings))
        return 0
    if args.command == "healthcheck":
        return healthcheck(settings, args.address)
    return asyncio.run(bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
