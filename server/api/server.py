"""Build the grpc.aio server: servicers, health, reflection, limits and keepalive."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genrpc.imagegen.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    image_pb2,
    image_pb2_grpc,
    live_pb2,
    live_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
)
from server.api.interceptors import CallInterceptor, WrappedHandlers

SERVICE_NAMES = (
    generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
    image_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
    flow_pb2.DESCRIPTOR.services_by_name["FlowService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    live_pb2.DESCRIPTOR.services_by_name["LiveService"].full_name,
    delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
    project_pb2.DESCRIPTOR.services_by_name["ProjectService"].full_name,
)

# An upload may be 5 MiB of bytes plus its fields.
MAX_MESSAGE_BYTES = 6 * 1024 * 1024

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

# grpc's own bound on a call's metadata is 8 KiB: an oversized x-api-key would be refused
# RESOURCE_EXHAUSTED before authentication could say UNAUTHENTICATED.
DEFAULT_MAX_METADATA_BYTES = 64 * 1024

# The core's default bound on calls not yet picked up by the application.
DEFAULT_PENDING_CALLS = 1000

# Calls the server core admits beyond the unary and stream limits (which the
# interceptor enforces): room for health checks, reflection and the calls it
# turns away with a proper status.
OPEN_CALL_HEADROOM = 1000


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Transport keepalive: ping idle connections (a watcher waiting on a slow generation)
    so that proxies keep them open and dead peers are noticed."""

    time_seconds: float = 30.0
    timeout_seconds: float = 10.0
    permit_without_calls: bool = True
    min_client_ping_seconds: float = 10.0

    def options(self) -> list[tuple[str, int]]:
        """The grpc core channel arguments."""
        return [
            ("grpc.keepalive_time_ms", int(self.time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_seconds * 1000),
            ),
            ("grpc.http2.max_pings_without_data", 0),
        ]


class Servicers:
    """The imagegen servicers (each defaults to the generated UNIMPLEMENTED base)."""

    def __init__(
        self,
        generations: generation_pb2_grpc.GenerationServiceServicer | None = None,
        images: image_pb2_grpc.ImageServiceServicer | None = None,
        flows: flow_pb2_grpc.FlowServiceServicer | None = None,
        admin: admin_pb2_grpc.AdminServiceServicer | None = None,
        live: live_pb2_grpc.LiveServiceServicer | None = None,
        delivery: delivery_pb2_grpc.DeliveryServiceServicer | None = None,
        projects: project_pb2_grpc.ProjectServiceServicer | None = None,
    ) -> None:
        # The generated base classes answer every RPC with UNIMPLEMENTED (their
        # stubs mark them abstract, hence the ignores).
        self.generations = generations or generation_pb2_grpc.GenerationServiceServicer()  # type: ignore[abstract]
        self.images = images or image_pb2_grpc.ImageServiceServicer()  # type: ignore[abstract]
        self.flows = flows or flow_pb2_grpc.FlowServiceServicer()  # type: ignore[abstract]
        self.admin = admin or admin_pb2_grpc.AdminServiceServicer()  # type: ignore[abstract]
        self.live = live or live_pb2_grpc.LiveServiceServicer()  # type: ignore[abstract]
        self.delivery = delivery or delivery_pb2_grpc.DeliveryServiceServicer()  # type: ignore[abstract]
        self.projects = projects or project_pb2_grpc.ProjectServiceServicer()  # type: ignore[abstract]


class GenericOnly:
    """A server as generated ``add_*_to_server`` functions see it: handlers, generic only,
    gathered into one generic handler (``handlers``) that serves each method wrapped.

    grpcio's aio server keeps one pending "next call" task per *registered* method and
    waits on all of them (``asyncio.wait``) for every call that arrives: with the ~40
    methods of imagegen.v1, health and reflection, that is ~40 callbacks added and
    removed per call. Served through the generic handler alone, it waits on one, as
    the bare echo server does.
    """

    def __init__(self, handlers: WrappedHandlers) -> None:
        self.handlers = handlers

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Serve these handlers' methods (wrapped)."""
        self.handlers.add(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Drop them: the same handlers were passed as a generic handler already."""


def _unwrapped(
    _method: str, handler: grpc.RpcMethodHandler[Any, Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    return handler


def create_server(
    servicers: Servicers,
    *,
    address: str = "127.0.0.1:0",
    interceptor: CallInterceptor | None = None,
    max_calls: int | None = None,
    keepalive: Keepalive = Keepalive(),
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A server bound to ``address`` (port 0 picks one): returns it, its port and its health.

    Every method, health and reflection included, is served wrapped by ``interceptor``.
    ``max_calls`` bounds every call in the server core (a last resort); the
    interceptor admits unary calls and streams apart, under their own limits.
    ``max_metadata_bytes`` bounds a call's metadata (grpc refuses more, RESOURCE_EXHAUSTED).
    """
    pending = max(max_calls or 0, DEFAULT_PENDING_CALLS)
    server = grpc.aio.server(
        maximum_concurrent_rpcs=max_calls,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Soft and hard bound alike: between the two grpc refuses a random share of
            # calls, and a caller's answer should not depend on chance.
            ("grpc.max_metadata_size", max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", max_metadata_bytes),
            # Calls that arrived but that the event loop has not picked up yet: past
            # these, the core cancels new ones, so a burst of thousands of watchers
            # subscribing at once would lose some. Admission proper happens in the
            # interceptor, with a status that says why.
            ("grpc.server.max_pending_requests", pending),
            ("grpc.server.max_pending_requests_hard_limit", 2 * pending),
            # grpc sets SO_REUSEPORT by default: a second server on a busy port would
            # start silently and take a share of its connections.
            ("grpc.so_reuseport", 0),
            *keepalive.options(),
        ],
    )
    handlers = interceptor.handlers() if interceptor is not None else WrappedHandlers(_unwrapped)
    generic = cast(grpc.aio.Server, GenericOnly(handlers))
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(servicers.generations, generic)
    image_pb2_grpc.add_ImageServiceServicer_to_server(servicers.images, generic)
    flow_pb2_grpc.add_FlowServiceServicer_to_server(servicers.flows, generic)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicers.admin, generic)
    live_pb2_grpc.add_LiveServiceServicer_to_server(servicers.live, generic)
    delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(servicers.delivery, generic)
    project_pb2_grpc.add_ProjectServiceServicer_to_server(servicers.projects, generic)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, generic)
    reflected = (
        *SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        # v1 is served (below) but not listed: its descriptor is not in the pool.
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(reflected, generic)
    _serve_reflection_v1(generic, reflected)
    server.add_generic_rpc_handlers((handlers,))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpc's "Failed to bind to address"
        port = 0
    if port == 0:
        raise OSError(
            errno.EADDRINUSE, f"cannot listen for gRPC on {address}: the address is in use"
        )
    return server, port, health_servicer


def _serve_reflection_v1(server: grpc.aio.Server, names: Sequence[str]) -> None:
    """Answer grpc.reflection.v1 too: grpcio-reflection ships only v1alpha.

    The two versions' messages are identical on the wire, so a v1alpha
    servicer registered under the v1 name serves v1 clients.
    """
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha._async import ReflectionServicer

    servicer = ReflectionServicer(names)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": method}),)
    )


async def set_serving(health_servicer: health_aio.HealthServicer, serving: bool) -> None:
    """Flip the overall and per-service health status."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, status)
