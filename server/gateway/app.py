"""The gateway's ASGI application: one Starlette route per path template of the annotations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import grpc
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.gateway import cdn, content, events, headers, openapi, probes, unary
from server.gateway.clientip import parse_proxies
from server.gateway.fastgets import FastGets, GatewayApp
from server.gateway.responses import error_body, gateway_error
from server.gateway.routing import Binding, bindings, by_pattern
from server.gateway.state import Gateway
from server.gateway.upstream import CORRELATION_HEADER, Upstream, correlation_id

log = structlog.get_logger("imagegen.gateway")

Endpoint = Callable[[Request], Awaitable[Response]]
HTTP_CODES = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def create_gateway(
    target: str | grpc.aio.Channel,
    *,
    heartbeat_seconds: float = 15.0,
    extra_routes: Sequence[BaseRoute] = (),
    gateway_token: str = "",
    trusted_proxies: str = "",
) -> Starlette:
    """The REST gateway in front of the gRPC API at ``target`` ("host:port", or a channel
    the caller owns and closes).

    Routes come from the ``google.api.http`` annotations of the imagegen.v1 services;
    ``extra_routes`` (say, ``/metrics``) are tried first. ``heartbeat_seconds`` is the
    quiet time after which an event stream sends a ``: keep-alive`` comment.
    ``gateway_token`` opens the internal DeliveryService behind the public /cdn and
    /signed routes; ``trusted_proxies`` (comma-separated CIDRs) may set X-Forwarded-For.
    """
    gateway = Gateway(Upstream(target), heartbeat_seconds)
    all_bindings = bindings()
    spec = openapi.document(all_bindings)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    routes: list[BaseRoute] = [
        *extra_routes,
        *probes.routes(gateway),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *cdn.routes(gateway, gateway_token, parse_proxies(trusted_proxies)),
    ]
    # Endpoints whose GET is a unary call: FastGets may call them without Starlette's layers.
    direct: list[Endpoint] = []
    for pattern, verbs in by_pattern(all_bindings).items():
        endpoint = _endpoint(gateway, verbs)
        routes.append(Route(pattern, endpoint, methods=list(verbs)))
        if "GET" in verbs and _answerer(gateway, verbs["GET"]) is not None:
            direct.append(endpoint)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()

    app = GatewayApp(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.fast_gets = FastGets(app.routes, direct)
    app.state.gateway = gateway
    return app


def _answerer(gateway: Gateway, binding: Binding) -> unary.Unary | None:
    """The unary answerer of a binding (None for event streams and image content)."""
    if content.serves_content(binding) or binding.streaming:
        return None
    return unary.Unary(gateway, binding)


def _endpoint(gateway: Gateway, verbs: dict[str, Binding]) -> Endpoint:
    # Worked out once per route: what answers each verb.
    answerers = {verb: _answerer(gateway, binding) for verb, binding in verbs.items()}

    async def endpoint(request: Request) -> Response:
        # Starlette answers HEAD through GET routes; only the content route treats it apart.
        verb = "GET" if request.method == "HEAD" else request.method
        binding = verbs[verb]
        refused = headers.refusal(request)
        if refused is not None:
            return gateway_error(refused, {CORRELATION_HEADER: correlation_id(request)})
        try:
            answer = answerers[verb]
            if answer is not None:
                return await answer(request)
            if content.serves_content(binding):
                return await content.content(gateway, binding, request)
            return await events.watch(gateway, binding, request)
        except ClientDisconnect:
            # The client left while sending its body: nobody reads an answer, nothing broke.
            log.info(
                "client_disconnected",
                method=binding.full_method,
                correlation_id=correlation_id(request),
            )
            return Response(status_code=499)
        except Exception:
            cid = correlation_id(request)
            log.exception("gateway_failed", method=binding.full_method, correlation_id=cid)
            body = error_body(
                "INTERNAL", f"internal error (correlation id {cid})", status="INTERNAL"
            )
            return JSONResponse(body, status_code=500, headers={CORRELATION_HEADER: cid})

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (no such method) in the error envelope."""
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = (
        f"no route {request.method} {request.url.path}"
        if exc.status_code == 404
        else f"{request.method} is not allowed on {request.url.path}"
        if exc.status_code == 405
        else str(exc.detail)
    )
    return JSONResponse(
        error_body(code, message), status_code=exc.status_code, headers=dict(exc.headers or {})
    )
