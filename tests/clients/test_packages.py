"""The two wheels (imagegen-client, imagegen) built and installed into a fresh venv, then used."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.serve_process import ServeProcess

from imagegen_client import AsyncClient, Client

ROOT = Path(__file__).resolve().parents[2]
# What installing the SDK may bring: itself, gRPC, protobuf, the google.rpc
# messages (and grpcio's typing-extensions); nothing of the server.
SDK_DISTRIBUTIONS = {
    "imagegen-client",
    "grpcio",
    "protobuf",
    "googleapis-common-protos",
    "typing-extensions",
}

pytestmark = pytest.mark.slow

# Runs in the fresh venv: the SDK end to end, and proof that nothing else came along.
SDK_SCRIPT = """
import json, sys
from imagegen_client import Client, GenerationStatus
with Client(sys.argv[1], sys.argv[2]) as client:
    image = client.generate("a lighthouse at dusk", aspect_ratio="16:9")
    saved = image.save(sys.argv[3])
print(json.dumps({
    "status": str(GenerationStatus(image.generation.status)),
    "mime_type": image.mime_type,
    "size": [image.width, image.height],
    "bytes": len(image.data),
    "loaded": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; its stdout (a failure shows its stderr)."""
    done = subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def distributions(venv: Path) -> set[str]:
    """The distributions installed in a venv, by normalised name (pip itself aside)."""
    listed = json.loads(run(venv / "bin" / "python", "-m", "pip", "list", "--format=json"))
    names = {entry["name"].lower().replace("_", "-") for entry in listed}
    return names - {"pip", "setuptools", "wheel"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """imagegen-client and imagegen built from this checkout (no network: the venv's setuptools)."""
    out = tmp_path_factory.mktemp("wheels")
    for source in (ROOT / "clients" / "python", ROOT):
        run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            out,
            source,
        )
    (sdk,) = out.glob("imagegen_client-*.whl")
    (server,) = out.glob("imagegen-*.whl")
    return {"sdk": sdk, "server": server}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with nothing of this checkout in it."""
    path = tmp_path_factory.mktemp("fresh") / "venv"
    run(sys.executable, "-m", "venv", path)
    return path


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[ServeProcess]:
    """A server run from this checkout (the SDK-only venv has none)."""
    server = ServeProcess(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.terminate()


def clean_env() -> dict[str, str]:
    """The environment without this checkout's venv or IMAGEGEN_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGEN_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_sdk_wheel_holds_only_imagegen_client(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["sdk"]) as wheel:
        top = {name.split("/")[0] for name in wheel.namelist()}
        assert top == {"imagegen_client", "imagegen_client-0.1.0.dist-info"}
        # The generated code ships inside it, with its type stubs.
        assert "imagegen_client/_genrpc/imagegen/v1/generation_pb2.py" in wheel.namelist()
        assert "imagegen_client/_genrpc/imagegen/v1/generation_pb2.pyi" in wheel.namelist()
        entry_points = wheel.read("imagegen_client-0.1.0.dist-info/entry_points.txt").decode()
        assert "imagegen = imagegen_client.launcher:main" in entry_points
    with zipfile.ZipFile(wheels["server"]) as wheel:
        top = {name.split("/")[0] for name in wheel.namelist()}
        # The server depends on the SDK and does not carry a copy of it.
        assert "imagegen_client" not in top and "clients" not in top
        # The protos' comments travel with the server, for its OpenAPI document.
        assert "genrpc/imagegen/v1/source_info.binpb" in wheel.namelist()
        metadata = wheel.read("imagegen-0.1.0.dist-info/METADATA").decode()
        assert "Requires-Dist: imagegen-client[cli]==0.1.0" in metadata
        entry_points = wheel.read("imagegen-0.1.0.dist-info/entry_points.txt").decode()
        assert "[imagegen.commands]" in entry_points and "serve = " in entry_points


def test_sdk_then_server_in_a_fresh_venv(
    wheels: dict[str, Path], venv: Path, dev_server: ServeProcess, tmp_path: Path
) -> None:
    env = clean_env()
    python, imagegen = venv / "bin" / "python", venv / "bin" / "imagegen"
    run(python, "-m", "pip", "install", "--quiet", wheels["sdk"], env=env)
    assert distributions(venv) == SDK_DISTRIBUTIONS

    # The SDK, imported from the fresh venv (not this checkout), against a live server.
    out = tmp_path / "lighthouse.png"
    report = json.loads(
        run(python, "-c", SDK_SCRIPT, dev_server.address, dev_server.api_key(), out, env=env)
    )
    assert report["status"] == "SUCCESS"
    assert report["mime_type"] == "image/png" and report["size"] == [1792, 1008]
    assert report["bytes"] == out.stat().st_size > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not {"server", "genrpc", "clients", "sqlalchemy"} & set(report["loaded"])

    # Without the [cli] extra the launcher says what to install instead of a traceback.
    plain = subprocess.run(
        [imagegen, "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert plain.returncode == 2
    assert "pip install 'imagegen-client[cli]'" in plain.stderr

    # The server's wheel on top: it brings the CLI extra and adds its commands to `imagegen`.
    install = (python, "-m", "pip", "install", "--quiet", "--find-links", wheels["sdk"].parent)
    run(*install, wheels["server"], env=env)
    served = ServeProcess(tmp_path / "fresh-data", command=[str(imagegen)], **env).start()
    try:
        server_env = {**env, "IMAGEGEN_ADDRESS": served.address}
        assert run(imagegen, "healthcheck", "--address", served.address, env=env).strip() == (
            "SERVING"
        )
        key = served.api_key()
        generate = (imagegen, "generate", "a red fox", "--wait", "--json", "--api-key", key)
        generation = json.loads(run(*generate, env=server_env))
        assert generation["status"] == "GENERATION_STATUS_SUCCESS"
    finally:
        assert served.terminate() == 0


def test_sync_client_is_generated_from_the_async_one() -> None:
    # sync.py is written from aio.py (clients/python/gensync.py), never by hand …
    tracked = run("git", "-C", ROOT, "ls-files", "clients/python/imagegen_client")
    assert "aio.py" in tracked and "sync.py" not in tracked
    run(sys.executable, ROOT / "clients" / "python" / "gensync.py", "--check")

    # … so the two clients offer the same calls with the same parameters.
    def calls(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        }

    assert calls(Client) == calls(AsyncClient)
    assert inspect.iscoroutinefunction(AsyncClient.get_generation)
    assert not inspect.iscoroutinefunction(Client.get_generation)
