"""GET /healthz (liveness) and GET /readyz (readiness): public, no API key.

Liveness says only that this HTTP server answers. Readiness asks the API's grpc.health.v1
(the gateway speaks gRPC only): SERVING means the database and the object store answer and
the server is not draining; anything else, or no answer within a few seconds, is 503.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.gateway.state import Gateway

CHECK = "/grpc.health.v1.Health/Check"
CHECK_TIMEOUT_SECONDS = 3.0


def routes(gateway: Gateway) -> list[Route]:
    """The two probe routes of ``gateway``."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_request: Request) -> Response:
        if gateway.closing.is_set():
            return _not_ready("draining")
        check = gateway.upstream.channel.unary_unary(
            CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = await check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            return _not_ready(f"the API did not answer its health check ({error.code().name})")
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return _not_ready(f"the API reports {name}")
        return JSONResponse({"status": "ready"})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


def _not_ready(reason: str) -> Response:
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
