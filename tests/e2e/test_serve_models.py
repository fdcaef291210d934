"""`imagegen serve` as a real process with a hosted default model at a local provider server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_provider import FakeProvider
from provider_wire import gemini_image, openai_image, picture
from serve_process import ServeProcess

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, image_pb2, image_pb2_grpc

pytestmark = pytest.mark.slow

OPENAI_KEY = "sk-e2e-openai-key-7f3a"
GEMINI_KEY = "AIza-e2e-gemini-key-9c1b"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider().start()
    yield provider
    provider.stop()


def generate(server: ServeProcess, prompt: str, aspect_ratio: str) -> tuple[g.Generation, bytes]:
    """Create with the deployment's default model, wait, read the stored bytes."""
    md = (("x-api-key", server.api_key()),)
    with grpc.insecure_channel(server.address) as channel:
        gens = generation_pb2_grpc.GenerationServiceStub(channel)
        created = gens.CreateGeneration(
            g.CreateGenerationRequest(prompt=prompt, aspect_ratio=aspect_ratio), metadata=md
        )
        done = gens.WatchGeneration(g.WatchGenerationRequest(id=created.id), metadata=md)
        last = None
        for event in done:
            last = event.generation
        assert last is not None
        images = image_pb2_grpc.ImageServiceStub(channel)
        content = (
            b"".join(
                chunk.data
                for chunk in images.ReadImageContent(
                    image_pb2.ReadImageContentRequest(id_or_alias=last.output_image.id), metadata=md
                )
            )
            if last.status == g.GENERATION_STATUS_SUCCESS
            else b""
        )
    return last, content


def test_serve_with_openai_as_the_default_model(tmp_path: Path, fake: FakeProvider) -> None:
    returned = picture(1536, 1024)
    fake.queue(openai_image(returned, "1536x1024"))
    server = ServeProcess(
        tmp_path / "data",
        IMAGEGEN_DEFAULT_MODEL="openai/gpt-image-1",
        IMAGEGEN_OPENAI_API_KEY=OPENAI_KEY,
        IMAGEGEN_OPENAI_BASE_URL=f"{fake.url}/v1",
        # Debug logs too (the SDKs' and httpx's own records included) must not show the key.
        IMAGEGEN_LOG_LEVEL="debug",
    ).start()
    try:
        done, content = generate(server, "a red fox in snow", "3:2")
    finally:
        server.terminate()
    assert done.status == g.GENERATION_STATUS_SUCCESS, (done.error, server.log())
    assert done.model == "openai/gpt-image-1"
    assert content == returned
    assert (done.output_image.width, done.output_image.height) == (1536, 1024)
    [request] = fake.received
    assert request.path == "/v1/images/generations"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.json()["model"] == "gpt-image-1" and request.json()["size"] == "1536x1024"
    # The enhanced prompt went to the model; the key never reached the log.
    assert request.json()["prompt"] == done.prompt
    assert OPENAI_KEY not in server.log()


def test_serve_with_gemini_as_the_default_model(tmp_path: Path, fake: FakeProvider) -> None:
    returned = picture(1184, 864, "JPEG")
    fake.queue(gemini_image(returned, "image/jpeg"))
    server = ServeProcess(
        tmp_path / "data",
        IMAGEGEN_DEFAULT_MODEL="gemini/gemini-2.5-flash-image",
        IMAGEGEN_GEMINI_API_KEY=GEMINI_KEY,
        IMAGEGEN_GEMINI_BASE_URL=fake.url,
        IMAGEGEN_LOG_LEVEL="debug",
    ).start()
    try:
        done, content = generate(server, "a lighthouse at dusk", "3:2")
    finally:
        server.terminate()
    assert done.status == g.GENERATION_STATUS_SUCCESS, (done.error, server.log())
    assert done.model == "gemini/gemini-2.5-flash-image"
    assert content == returned
    assert (done.output_image.width, done.output_image.height) == (1184, 864)
    assert done.output_image.mime_type == "image/jpeg"
    [request] = fake.received
    assert request.path == "/v1/models/gemini-2.5-flash-image:generateContent"
    assert request.headers["x-goog-api-key"] == GEMINI_KEY
    assert request.json()["generationConfig"]["imageConfig"]["aspectRatio"] == "3:2"
    assert GEMINI_KEY not in server.log()


def test_serve_refuses_a_default_model_without_its_key(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data", IMAGEGEN_DEFAULT_MODEL="openai/gpt-image-1")
    with pytest.raises(RuntimeError, match="serve exited 2"):
        server.start(timeout=30)
    assert "IMAGEGEN_OPENAI_API_KEY is not set" in server.log()
    assert "Traceback" not in server.log()
