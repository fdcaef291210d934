"""Prometheus metrics of one process: RPCs, queue depth, generations in flight and their latency."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Generation runs take from tens of milliseconds (local) to minutes (hosted models).
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The process's metrics, in a registry of its own (tests run several Apps per process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "imagegen_rpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "imagegen_rpc_duration_seconds",
            "RPC handling time (streams: until the stream ends), by method.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "imagegen_queue_depth",
            "Generations waiting for a worker (PENDING, or PROCESSING with an expired lease).",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "imagegen_generations_in_flight",
            "Generations this process is running now.",
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "imagegen_generation_duration_seconds",
            "Time from claim to finish of one run, by outcome (success, failed).",
            ["outcome"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        # The labelled children each RPC updates, by label values: ``labels()`` checks
        # and looks them up under a lock on every call.
        self._rpc_counts: dict[tuple[str, str], Any] = {}
        self._rpc_times: dict[str, Any] = {}

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC."""
        count = self._rpc_counts.get((method, code))
        if count is None:
            count = self._rpc_counts[method, code] = self.rpcs.labels(method, code)
        count.inc()
        timing = self._rpc_times.get(method)
        if timing is None:
            timing = self._rpc_times[method] = self.rpc_seconds.labels(method)
        timing.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def metrics_route(metrics: Metrics) -> Route:
    """GET /metrics for the HTTP side (Prometheus scrapes it)."""

    async def scrape(_request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return Route("/metrics", scrape, methods=["GET"])
