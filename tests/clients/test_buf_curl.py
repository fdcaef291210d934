"""`buf curl` through server reflection: every RPC of the contract is listed and callable."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import make_settings

from server.app import App

# Every RPC named in docs/api.md (the fixed imagegen.v1 contract).
CONTRACT = {
    "GenerationService": [
        "CreateGeneration",
        "ListGenerations",
        "GetGeneration",
        "UpdateGeneration",
        "RegenerateGeneration",
        "DeleteGeneration",
        "WatchGeneration",
        "WatchGenerations",
    ],
    "ImageService": [
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
    "FlowService": [
        "ListFlows",
        "GetFlow",
        "ListFlowGenerations",
        "ListFlowImages",
        "UpdateFlowAliases",
        "DeleteFlowAlias",
        "RegenerateFlow",
        "DeleteFlow",
    ],
    "AdminService": [
        "CreateProject",
        "ListProjects",
        "CreateApiKey",
        "ListApiKeys",
        "RevokeApiKey",
    ],
}


def buf_binary() -> str:
    """The buf of this virtualenv (the buf-bin package), else one on PATH."""
    beside = Path(sys.executable).parent / "buf"
    found = str(beside) if beside.exists() else shutil.which("buf")
    if found is None:
        pytest.fail("buf is not installed: it comes with the dev extras (buf-bin)")
    return found


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[App]:
    started = App(make_settings(tmp_path / "data"))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def buf_curl(app: App, *args: str) -> tuple[int, str, str]:
    """Run `buf curl` against the app (as a subprocess, so this loop keeps serving)."""
    process = await asyncio.create_subprocess_exec(
        buf_binary(),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        *args[:-1],
        f"http://127.0.0.1:{app.grpc_port}{args[-1]}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("reflection", ["grpc-v1", "grpc-v1alpha"])
async def test_list_methods_shows_the_whole_contract(server: App, reflection: str) -> None:
    code, out, err = await buf_curl(server, "--reflect-protocol", reflection, "--list-methods", "")
    assert code == 0, err
    listed = set(out.split())
    expected = {
        f"imagegen.v1.{service}/{rpc}" for service, rpcs in CONTRACT.items() for rpc in rpcs
    }
    assert expected <= listed, sorted(expected - listed)
    assert "grpc.health.v1.Health/Check" in listed


async def test_a_real_call_with_an_api_key(server: App) -> None:
    key = f"x-api-key: {server.dev_api_key}"
    body = json.dumps({"prompt": "a serene mountain landscape at sunset", "aspectRatio": "16:9"})
    code, out, err = await buf_curl(
        server, "-H", key, "-d", body, "/imagegen.v1.GenerationService/CreateGeneration"
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["status"] == "GENERATION_STATUS_PENDING"
    assert created["aspectRatio"] == "16:9"

    code, out, err = await buf_curl(
        server,
        "-H",
        key,
        "-d",
        json.dumps({"id": created["id"]}),
        "/imagegen.v1.GenerationService/WatchGeneration",
    )
    assert code == 0, err
    # A stream prints one JSON object per message; the last one is the finished state.
    decoder = json.JSONDecoder()
    events, rest = [], out.strip()
    while rest:
        event, end = decoder.raw_decode(rest)
        events.append(event)
        rest = rest[end:].strip()
    assert events[-1]["generation"]["status"] == "GENERATION_STATUS_SUCCESS"

    # Without the key the same call is refused with the contract's error details.
    code, out, err = await buf_curl(
        server,
        "-d",
        json.dumps({"id": created["id"]}),
        "/imagegen.v1.GenerationService/GetGeneration",
    )
    assert code != 0
    assert '"code": "unauthenticated"' in out + err
    assert "google.rpc.ErrorInfo" in out + err
