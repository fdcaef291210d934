"""An App wired to a fake provider, and helpers to create a generation and read its image."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from conftest import make_settings
from expect import until_terminal
from fake_provider import FakeProvider

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, image_pb2, image_pb2_grpc
from server.app import App

OPENAI_KEY = "sk-test-openai-0123456789"
GEMINI_KEY = "AIza-test-gemini-0123456789"


@dataclass
class Served:
    """A running App, its fake provider, and stubs with the dev key."""

    app: App
    fake: FakeProvider
    gens: generation_pb2_grpc.GenerationServiceStub
    images: image_pb2_grpc.ImageServiceStub
    md: tuple[tuple[str, str], ...]

    async def run(self, timeout: float = 60, **fields: Any) -> g.Generation:
        """Create a generation and wait until it is SUCCESS or FAILED."""
        created = await self.gens.CreateGeneration(
            g.CreateGenerationRequest(**fields), metadata=self.md
        )
        return await until_terminal(self.gens, created.id, self.md, timeout)

    async def content(self, image_id: str) -> tuple[bytes, str]:
        """The stored bytes of an image and their MIME type."""
        data = b""
        mime = ""
        call = self.images.ReadImageContent(
            image_pb2.ReadImageContentRequest(id_or_alias=image_id), metadata=self.md
        )
        async for chunk in call:
            data += chunk.data
            mime = mime or chunk.mime_type
        return data, mime

    async def upload(self, content: bytes) -> str:
        """Upload a reference picture; its image ID."""
        image = await self.images.UploadImage(
            image_pb2.UploadImageRequest(content=content), metadata=self.md
        )
        return image.id


@asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[Served]:
    """An App whose openai and gemini providers point at one fake server."""
    fake = FakeProvider().start()
    settings: dict[str, Any] = {
        "openai_api_key": OPENAI_KEY,
        "openai_base_url": f"{fake.url}/v1",
        "gemini_api_key": GEMINI_KEY,
        "gemini_base_url": fake.url,
        "retry_backoff_seconds": 0.01,
        "max_attempts": 3,
    }
    settings.update(overrides)
    app = App(make_settings(tmp_path / "data", **settings))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            yield Served(
                app,
                fake,
                generation_pb2_grpc.GenerationServiceStub(channel),
                image_pb2_grpc.ImageServiceStub(channel),
                (("x-api-key", app.dev_api_key or ""),),
            )
    finally:
        await app.stop()
        fake.stop()
