"""`imagegen serve` as a real process: reflection lists the contract, health, SIGTERM drains."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from serve_process import ServeProcess

from genrpc.imagegen.v1 import generation_pb2, generation_pb2_grpc

# Every RPC of shared/docs/api.md.
CONTRACT = {
    "imagegen.v1.GenerationService": [
        "CreateGeneration",
        "ListGenerations",
        "GetGeneration",
        "UpdateGeneration",
        "RegenerateGeneration",
        "DeleteGeneration",
        "WatchGeneration",
        "WatchGenerations",
    ],
    "imagegen.v1.ImageService": [
        "UploadImage",
        "GetImage",
        "ListImages",
        "ResolveAlias",
        "UpdateImage",
        "SetImageAlias",
        "DeleteImage",
        "ReadImageContent",
        "GetImageUrl",
    ],
    "imagegen.v1.FlowService": [
        "ListFlows",
        "GetFlow",
        "ListFlowGenerations",
        "ListFlowImages",
        "UpdateFlowAliases",
        "DeleteFlowAlias",
        "RegenerateFlow",
        "DeleteFlow",
    ],
    "imagegen.v1.AdminService": [
        "CreateProject",
        "ListProjects",
        "CreateApiKey",
        "ListApiKeys",
        "RevokeApiKey",
    ],
}


def buf() -> str:
    """The buf binary of the buf-bin package, next to this interpreter."""
    return str(Path(sys.executable).parent / "buf")


@pytest.fixture
def served(tmp_path: Path) -> ServeProcess:
    server = ServeProcess(tmp_path / "data").start()
    yield server
    server.kill()


def test_reflection_lists_every_rpc_of_the_contract(served: ServeProcess) -> None:
    listed = subprocess.run(
        [
            buf(),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-methods",
            f"http://{served.address}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    for service, methods in CONTRACT.items():
        for method in methods:
            assert f"{service}/{method}" in listed
    assert "grpc.health.v1.Health/Check" in listed


def test_first_start_prints_and_stores_a_working_dev_key(served: ServeProcess) -> None:
    key = served.api_key()
    # Health answers SERVING from inside start(); the banner is printed just after it.
    deadline = time.monotonic() + 15
    while key not in served.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key in served.log()
    with grpc.insecure_channel(served.address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        created = stub.CreateGeneration(
            generation_pb2.CreateGenerationRequest(prompt="a lighthouse"),
            metadata=(("x-api-key", key),),
            timeout=10,
        )
    assert created.status == generation_pb2.GENERATION_STATUS_PENDING


def test_sigterm_drains_and_exits_zero_within_five_seconds(served: ServeProcess) -> None:
    assert served.serving()
    started = time.monotonic()
    code = served.terminate(timeout=10)
    assert code == 0, served.log()
    assert time.monotonic() - started < 5
    assert '"event": "stopped"' in served.log()


def test_sigint_also_exits_zero(served: ServeProcess) -> None:
    import signal

    assert served.process is not None
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(10) == 0, served.log()


def test_rpc_log_line_has_correlation_id_method_code_duration(served: ServeProcess) -> None:
    with grpc.insecure_channel(served.address) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetGeneration(
                generation_pb2.GetGenerationRequest(id="nope"),
                metadata=(("x-api-key", served.api_key()), ("x-request-id", "req-42")),
                timeout=10,
            )
    served.terminate()
    lines = [line for line in served.log().splitlines() if '"req-42"' in line]
    assert lines, served.log()
    assert '"correlation_id": "req-42"' in lines[-1]
    assert '"code": "INVALID_ARGUMENT"' in lines[-1]
    assert '"method": "/imagegen.v1.GenerationService/GetGeneration"' in lines[-1]
    assert '"duration_ms"' in lines[-1]


@pytest.mark.parametrize("version", ["grpc-v1", "grpc-v1alpha"])
def test_both_reflection_versions_answer(served: ServeProcess, version: str) -> None:
    listed = subprocess.run(
        [
            buf(),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-services",
            "--reflect-protocol",
            version,
            f"http://{served.address}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert set(CONTRACT) <= set(listed)
