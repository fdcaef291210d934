"""GET requests of unary routes answered without Starlette's middleware layers and router walk.

A REST read went through seven ASGI layers (Starlette, its two exception middlewares, the
router trying each route's regex in turn, the route, the request wrapper, the endpoint)
before the endpoint ran: more CPU than the endpoint itself. The endpoints of the unary
routes catch every exception and answer in the envelope, so those layers have nothing to
do for them. ``GatewayApp`` finds the route a GET goes to exactly as Starlette's router
does (the first route, in order, whose path matches and which allows GET), looking only at
routes whose literal prefix the path starts with, and calls the endpoint directly when it is
one of those unary routes; anything else (other methods, HEAD, event streams, image content,
404s and 405s, a mounted root path) goes through Starlette unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

# (literal prefix of the path, the route, whether its endpoint may be called directly);
# the route is None where only Starlette can tell whether it matches (a Mount, a Host…).
Entry = tuple[str, Route | None, bool]


class FastGets:
    """The routes of an app in order, with what the GET shortcut needs to know of each."""

    def __init__(self, routes: Sequence[BaseRoute], direct: Collection[object]) -> None:
        entries: list[Entry] = []
        for route in routes:
            if isinstance(route, Route):
                prefix = route.path_format.split("{", 1)[0]
                entries.append((prefix, route, route.endpoint in direct))
            else:
                entries.append(("", None, False))
        self.entries = tuple(entries)

    def resolve(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        """The route a GET of ``path`` goes to and its path parameters, when its endpoint may
        be called directly; None when Starlette must decide."""
        for prefix, route, direct in self.entries:
            if not path.startswith(prefix):
                continue
            if route is None:
                return None
            match = route.path_regex.match(path)
            if match is None:
                continue
            if route.methods and "GET" not in route.methods:
                continue  # Starlette's partial match: it looks on for a route that allows GET
            if not direct:
                return None
            convertors = route.param_convertors
            params = {
                key: convertors[key].convert(value) for key, value in match.groupdict().items()
            }
            return route, params
        return None


class GatewayApp(Starlette):
    """Starlette, with GETs of unary routes handed straight to their endpoints."""

    fast_gets: FastGets | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_gets
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("root_path")
        ):
            found = fast.resolve(scope["path"])
            if found is not None:
                route, params = found
                # What Starlette and its router put in the scope on the way to a route.
                scope["app"] = self
                scope.setdefault("router", self.router)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {**scope.get("path_params", {}), **params}
                response = await route.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
