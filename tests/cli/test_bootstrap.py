"""`imagegen admin bootstrap` as a real subprocess: one admin key, once, usable by the server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
import pytest
from conftest import make_settings

from genrpc.imagegen.v1 import admin_pb2, admin_pb2_grpc
from server.app import App
from server.domain import keys
from server.domain.errors import DomainError, Status
from server.services.tenancy import bootstrap_admin


async def _bootstrap(data_dir: Path) -> tuple[int, str, str]:
    # Only our data dir counts: drop any IMAGEGEN_* setting of the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "admin",
        "bootstrap",
        "--data-dir",
        str(data_dir),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_bootstrap_once_then_refuse(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"  # does not exist yet

    code, out, err = await _bootstrap(data)
    assert code == 0, err
    secret = out.strip()
    assert keys.looks_like_key(secret), out
    assert secret.startswith("igk_admin_")
    assert out == secret + "\n"  # the key alone on stdout, easy to capture in a script

    code, out, err = await _bootstrap(data)
    assert code == 1
    assert out == ""
    assert "an admin key already exists" in err
    assert "AdminService.CreateApiKey" in err
    assert secret not in err

    # The printed key administers a server started on the same data directory.
    app = App(make_settings(data))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            listed = await stub.ListApiKeys(
                admin_pb2.ListApiKeysRequest(), metadata=(("x-api-key", secret),)
            )
            (admin,) = [key for key in listed.keys if key.admin]
            assert admin.prefix == secret[:12]
            # The dev project key the server printed is no admin key.
            assert app.dev_api_key
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListProjects(
                    admin_pb2.ListProjectsRequest(), metadata=(("x-api-key", app.dev_api_key),)
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await app.stop()


async def test_bootstrap_refuses_after_revocation(app: App, channel: grpc.aio.Channel) -> None:
    # A revoked admin key still counts: bootstrap must not be a way around revocation.
    secret = await bootstrap_admin(app.sessions)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    listed = await stub.ListApiKeys(
        admin_pb2.ListApiKeysRequest(), metadata=(("x-api-key", secret),)
    )
    (admin,) = [key for key in listed.keys if key.admin]
    await stub.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(id=admin.id), metadata=(("x-api-key", secret),)
    )
    with pytest.raises(DomainError) as caught:
        await bootstrap_admin(app.sessions)
    assert caught.value.status is Status.FAILED_PRECONDITION
    assert caught.value.reason == "ADMIN_KEY_EXISTS"
