"""Prometheus metrics: RPCs by method and code, generation outcomes, queue depth, in flight."""

from __future__ import annotations

import asyncio

import grpc
from expect import expect_error, until_terminal
from prometheus_client.parser import text_string_to_metric_families

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App


def samples(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parsed = text_string_to_metric_families(app.metrics.render().decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parsed for s in f.samples}


async def test_rpcs_and_runs_are_counted(app: App, channel: grpc.aio.Channel, auth) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a bell"), metadata=auth)
    await until_terminal(stub, created.id, auth)
    await expect_error(
        stub.GetGeneration(g.GetGenerationRequest(id="bad"), metadata=auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    create = "/imagegen.v1.GenerationService/CreateGeneration"
    get = "/imagegen.v1.GenerationService/GetGeneration"
    # The run's own figures are recorded just after its commit, and a refused call's
    # just after its status is sent (context.abort sends it), both of which the caller
    # may see first: wait (bounded) for the run to have left the engine and the call to
    # be counted.
    outcome = ("imagegen_generation_duration_seconds_count", (("outcome", "success"),))
    refused = ("imagegen_rpc_requests_total", (("code", "INVALID_ARGUMENT"), ("method", get)))
    for _ in range(200):
        values = samples(app)
        if (
            values.get(outcome) == 1
            and values[("imagegen_generations_in_flight", ())] == 0
            and refused in values
        ):
            break
        await asyncio.sleep(0.05)
    assert values[("imagegen_rpc_requests_total", (("code", "OK"), ("method", create)))] == 1
    assert (
        values[("imagegen_rpc_requests_total", (("code", "INVALID_ARGUMENT"), ("method", get)))]
        == 1
    )
    assert values[("imagegen_rpc_duration_seconds_count", (("method", create),))] == 1
    assert values[outcome] == 1
    assert values[("imagegen_generations_in_flight", ())] == 0
    assert ("imagegen_queue_depth", ()) in values


async def test_metrics_are_served_over_http(tmp_path) -> None:
    import httpx
    from conftest import make_settings

    app = App(make_settings(tmp_path / "data", http_enabled=True, http_port=0))
    await app.start()
    try:
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{app.http_port}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        assert "imagegen_queue_depth" in reply.text
        assert "imagegen_generations_in_flight" in reply.text
    finally:
        await app.stop()
