"""The one server interceptor: correlation id, admission, auth, a log line per RPC, errors.

Where the call's headers (``x-request-id``, the rate-limit budget) travel: a unary call
sends them as trailing metadata, with its status, success or failure; a stream sends
them as initial metadata, before its first message. grpc.aio always sends a unary
call's initial metadata in a batch of its own when a handler sets it, a separate write
and completion per call (about a tenth of a GetGeneration's server CPU); trailing
metadata rides in the batch that ends the call anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from random import getrandbits
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import structlog
from google.protobuf.message import DecodeError

from server import logs
from server.api import streams
from server.api.admission import Admission
from server.api.principal import current_principal
from server.api.status import to_grpc_status
from server.api.streams import HEADERS_WHEN_STARTED
from server.domain.errors import DomainError, Status
from server.domain.tenancy import Principal
from server.logs import call_fields
from server.metrics import Metrics
from server.services.dependencies import Dependencies, outage_of, unavailable

log = structlog.get_logger("imagegen.rpc")

# The correlation id of a call travels in this header (its wire name predates ours). It
# is not a request's ``request_id`` field, which is the idempotency key.
CORRELATION_HEADER = "x-request-id"

# Health and reflection stay open to anyone (load balancers, buf curl).
OPEN_SERVICES = ("/grpc.health.v1.", "/grpc.reflection.")
# A caller's correlation id is logged and echoed: printable ASCII, bounded.
CORRELATION_ID_MAX_CHARS = 128


class Undecodable:
    """Stands in for a request whose bytes did not parse (corrupt wire format, bad UTF-8).

    grpc runs the request deserializer before any interceptor code, and answers
    UNKNOWN with an error log when it raises; returning this instead lets the
    call reach the interceptor, which answers INVALID_ARGUMENT like any other
    caller mistake (logged with a request id, counted in the metrics).
    """

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name = type_name
        self.error = error

    def as_error(self) -> DomainError:
        """The INVALID_ARGUMENT the call answers."""
        return DomainError(
            Status.INVALID_ARGUMENT,
            "MALFORMED_REQUEST",
            f"the request is not a valid {self.type_name} message: {self.error}",
        )


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning an Undecodable instead of raising on bad bytes."""
    if deserializer is None:
        return None
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(type_name, "full_name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, RecursionError) as error:
            return Undecodable(name, error)

    return parse


def valid_correlation_id(value: str) -> bool:
    """Whether a caller-chosen correlation id may be logged and echoed as it is."""
    return (
        0 < len(value) <= CORRELATION_ID_MAX_CHARS
        and value.isascii()
        and value.isprintable()
        and value == value.strip()
    )


class Authenticator(Protocol):
    """Turns an RPC's metadata into a Principal, or raises UNAUTHENTICATED / PERMISSION_DENIED."""

    async def authenticate(
        self, method: str, metadata: dict[str, str], response_headers: list[tuple[str, str]]
    ) -> Principal:
        """Authenticate one call of ``method``.

        It may append to ``response_headers`` (say, the caller's rate-limit
        budget); they are sent as initial metadata even when it raises.
        """
        ...


class CallInterceptor:
    """Wraps every handler so each RPC is identified, authorised, logged and mapped.

    Not a grpc ServerInterceptor: grpc.aio runs those on every call (a coroutine, an
    iterator and a partial before the handler is even found). The server hands its
    handlers to ``handlers``, which wraps each method once, at its first call.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        metrics: Metrics | None = None,
        admission: Admission | None = None,
        dependencies: Dependencies | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._metrics = metrics
        # Without one (tests of other parts), nothing is counted.
        self._admission = admission or Admission(2**62, 2**62, 2**62)
        # Told of each call that failed because a dependency is down (logged once per outage).
        self._dependencies = dependencies or Dependencies()
        # Set when shutdown begins: open streams end at once with UNAVAILABLE.
        self._draining = asyncio.Event()
        # The task serving each open stream: drain() interrupts them. A set entry per
        # stream, rather than a waiter task per stream (memory is the cost of idle watchers).
        self._streams: set[asyncio.Task[Any]] = set()

    def drain(self) -> None:
        """End every open stream now (UNAVAILABLE SERVER_DRAINING: clients reconnect and
        resume elsewhere), so that streams do not hold the shutdown for its whole grace."""
        self._draining.set()
        for task in self._streams:
            task.cancel()

    def handlers(self) -> WrappedHandlers:
        """A generic handler serving the methods of the handlers added to it, wrapped."""
        return WrappedHandlers(self.wrap)

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` with this interceptor's work around each call."""
        if method.startswith(OPEN_SERVICES):
            # Not logged per call (load balancers poll health), but malformed bytes
            # are still the caller's INVALID_ARGUMENT rather than grpc's UNKNOWN.
            return _open_handler(handler)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # no client-streaming RPCs in imagegen.v1

    def _unary(self, method: str, behavior: Any) -> Any:
        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(method, context, unary=True)
            admission = self._admission
            try:
                admission.take_unary()
                try:
                    await call.begin(self._authenticator, request)
                    return await behavior(request, context)
                finally:
                    admission.release_unary()
            except BaseException as exc:
                await call.fail(exc, self._dependencies)
                raise
            finally:
                call.end(self._metrics)

        return run

    def _stream(self, method: str, behavior: Any) -> Any:
        async def run(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(method, context, unary=False)
            task = asyncio.current_task()
            admission = self._admission
            try:
                key_id = (await call.begin(self._authenticator, request)).key_id
                # A take/release pair, not a ``with``: the stream would keep a context
                # manager and its generator alive for its whole life.
                admission.take_stream(key_id)
                try:
                    if self._draining.is_set():
                        raise draining_error()
                    assert task is not None
                    self._streams.add(task)
                    try:
                        async for item in behavior(request, context):
                            if not call.headers_sent:
                                await call.send_headers()  # before its first message
                            yield item
                        await call.send_headers()  # one that ended without a message
                    except asyncio.CancelledError:
                        if not self._draining.is_set():
                            raise  # the client left (or grpc is stopping the call)
                        # drain() cancelled the task serving this stream: end it with a
                        # status the client can act on instead.
                        task.uncancel()
                        raise draining_error() from None
                    finally:
                        self._streams.discard(task)
                finally:
                    admission.release_stream(key_id)
            except BaseException as exc:
                await call.fail(exc, self._dependencies)
                raise
            finally:
                call.end(self._metrics)

        return run


if TYPE_CHECKING:
    _GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:  # grpc's classes are not generic at run time; only its stubs are
    _GenericHandler = grpc.GenericRpcHandler


class WrappedHandlers(_GenericHandler):
    """Generic handlers whose methods are served wrapped (by ``CallInterceptor.wrap``).

    Each method is found in the added handlers and wrapped at its first call, then
    kept: the services are registered once, so finding and wrapping a method again
    on every call would be waste on the hottest path.
    """

    def __init__(
        self,
        wrap: Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]],
    ) -> None:
        self._wrap = wrap
        self._handlers: list[grpc.GenericRpcHandler[Any, Any]] = []
        self._by_method: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        """Serve these handlers' methods too."""
        self._handlers.extend(handlers)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._by_method.get(method)
        if wrapped is None:
            for handler in self._handlers:
                found = handler.service(handler_call_details)
                if found is not None:
                    wrapped = self._by_method[method] = self._wrap(method, found)
                    break
        # None for an unknown method: grpc answers UNIMPLEMENTED.
        return wrapped


def draining_error() -> DomainError:
    """What an open stream ends with when the server starts shutting down."""
    return DomainError(
        Status.UNAVAILABLE,
        "SERVER_DRAINING",
        "the server is shutting down; reconnect (a watch resumes from its last cursor)",
        retry_after_seconds=0.0,
    )


def _open_handler(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """An open service's handler, answering INVALID_ARGUMENT to undecodable requests."""

    async def refuse(request: Undecodable, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.as_error().message)

    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def run_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            run_unary,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def run_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            run_stream,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler


class _Call:
    """Bookkeeping of one RPC: its correlation id, headers, start time and final code.

    A stream keeps its _Call for its whole life, so it holds no more than it needs
    (slots, and the request metadata only until authentication).
    """

    __slots__ = (
        "bad_correlation_id",
        "code",
        "context",
        "correlation_id",
        "fields",
        "headers",
        "headers_sent",
        "metadata",
        "method",
        "started",
        "unary",
    )

    def __init__(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], *, unary: bool
    ) -> None:
        self.method = method
        self.context = context
        self.unary = unary
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        # Read by begin() alone, which lets go of it.
        self.metadata: dict[str, str] | None = metadata
        given = metadata.get(CORRELATION_HEADER, "")
        self.bad_correlation_id = bool(given) and not valid_correlation_id(given)
        # Unique per call, not secret: 128 random bits without uuid4's os.urandom call.
        self.correlation_id = (
            given if given and not self.bad_correlation_id else f"{getrandbits(128):032x}"
        )
        # What the caller is told besides the reply (see the module docstring for where).
        self.headers = [(CORRELATION_HEADER, self.correlation_id)]
        self.headers_sent = False
        self.code = "OK"
        self.started = time.perf_counter()
        # What every line logged while serving this call carries (see server.logs).
        self.fields: dict[str, str] = {"correlation_id": self.correlation_id, "method": method}
        call_fields.set(self.fields)

    async def begin(self, authenticator: Authenticator, request: Any) -> Principal:
        """Authenticate, then refuse a malformed correlation id or request.

        The headers are sent after authenticating, so the authenticator's can
        ride along; failed calls still get their correlation id.
        """
        metadata, self.metadata = self.metadata or {}, None
        try:
            principal = await authenticator.authenticate(self.method, metadata, self.headers)
            current_principal.set(principal)
            self.fields["principal"] = principal.label
            if self.bad_correlation_id:
                raise DomainError(
                    Status.INVALID_ARGUMENT,
                    "INVALID_CORRELATION_ID",
                    f"{CORRELATION_HEADER} must be 1 to {CORRELATION_ID_MAX_CHARS} printable "
                    "ASCII characters; this call's id is in the response metadata",
                )
            if isinstance(request, Undecodable):
                raise request.as_error()
        except Exception:
            await self.send_headers()
            raise
        if self.method in HEADERS_WHEN_STARTED:
            # Sent by the handler once the stream has its starting point (api/streams.py),
            # or with its first message or its end, whichever comes first.
            streams.send_headers.set(self.send_headers)
        else:
            await self.send_headers()
        return principal

    async def send_headers(self) -> None:
        """Send the call's headers, once."""
        if self.headers_sent:
            return
        self.headers_sent = True
        if self.unary:
            # Sent with the status; an abort with details adds them (``_with_headers``).
            self.context.set_trailing_metadata(tuple(self.headers))
        else:
            await self.context.send_initial_metadata(tuple(self.headers))

    def _with_headers(self, status: Any) -> Any:
        """``status`` (grpc_status's, a namedtuple) carrying the call's headers too, unless
        they went as a stream's initial metadata."""
        if not self.unary and self.headers_sent:
            return status
        return status._replace(trailing_metadata=(*status.trailing_metadata, *self.headers))

    async def fail(self, exc: BaseException, dependencies: Dependencies) -> None:
        """Turn ``exc`` into the RPC's status (this raises grpc's AbortError)."""
        if self.unary or not self.headers_sent:
            # An abort without a status of its own sends these (refused before begin(),
            # or a stream that failed before it had its starting point).
            self.context.set_trailing_metadata(tuple(self.headers))
        # A DomainError or an abort already says what to answer, whatever caused it.
        answered = isinstance(exc, DomainError | grpc.aio.AbortError)
        dependency = outage_of(exc) if isinstance(exc, Exception) and not answered else None
        if dependency is not None:
            # Not a fault of this server: UNAVAILABLE (clients retry), and no traceback
            # per call; the outage is logged once, with a count, by ``dependencies``.
            dependencies.failed(dependency, exc)
            self.code = Status.UNAVAILABLE.value
            error = unavailable(dependency, self.correlation_id)
            await self.context.abort_with_status(  # type: ignore[attr-defined]
                self._with_headers(to_grpc_status(error))
            )
        elif isinstance(exc, DomainError):
            self.code = exc.status.value
            # grpc-stubs predates abort_with_status (grpcio has had it since 1.38).
            await self.context.abort_with_status(  # type: ignore[attr-defined]
                self._with_headers(to_grpc_status(exc))
            )
        elif isinstance(exc, grpc.aio.AbortError):
            code = self.context.code()
            self.code = code.name if isinstance(code, grpc.StatusCode) else str(code or "ABORTED")
        elif isinstance(exc, NotImplementedError):
            # The generated base servicer's answer for an RPC not written yet.
            self.code = "UNIMPLEMENTED"
            await self.context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"{self.method} is not implemented yet"
            )
        elif isinstance(exc, BaseException) and not isinstance(exc, Exception):
            self.code = "CANCELLED"
        else:
            self.code = "INTERNAL"
            log.exception("rpc_failed")
            await self.context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (correlation id {self.correlation_id})"
            )

    def end(self, metrics: Metrics | None) -> None:
        seconds = time.perf_counter() - self.started
        if logs.enabled(logging.INFO):
            log.info("rpc", code=self.code, duration_ms=round(seconds * 1000, 2))
        if metrics is not None:
            metrics.observe_rpc(self.method, self.code, seconds)
