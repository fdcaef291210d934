"""The SDK's results: generate → GeneratedImage, run/wait raising GenerationFailed, enums."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conftest import make_settings
from PIL import Image as PILImage

from genrpc.imagegen.v1 import generation_pb2, image_pb2
from imagegen_client import (
    AliasScope,
    AspectRatio,
    AsyncClient,
    Client,
    EnhancementTemplate,
    GeneratedImage,
    GenerationEventType,
    GenerationFailed,
    GenerationStatus,
    ImagegenError,
    ImageSource,
    OutputFormat,
)
from server.app import App
from server.domain.rules import ASPECT_RATIO_SIZES, ENHANCEMENT_TEMPLATES, OUTPUT_FORMATS


def address(app: App) -> str:
    return f"127.0.0.1:{app.grpc_port}"


@pytest.fixture
async def failing_app(tmp_path: Path) -> AsyncIterator[App]:
    """A server whose generator fails every run."""
    started = App(make_settings(tmp_path / "failing", generator_fail_mode="always"))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def test_enums_name_every_value_of_the_contract() -> None:
    # The Python enums carry the proto enums' numbers under their short names.
    for python_enum, proto_enum, prefix in (
        (GenerationStatus, generation_pb2.GenerationStatus, "GENERATION_STATUS_"),
        (GenerationEventType, generation_pb2.GenerationEventType, "GENERATION_EVENT_TYPE_"),
        (ImageSource, image_pb2.ImageSource, "IMAGE_SOURCE_"),
        (AliasScope, image_pb2.AliasScope, "ALIAS_SCOPE_"),
    ):
        proto = {name.removeprefix(prefix): number for name, number in proto_enum.items()}
        assert {member.name: member.value for member in python_enum} == proto
    # The string-valued ones match what the server accepts.
    assert [ratio.value for ratio in AspectRatio] == list(ASPECT_RATIO_SIZES)
    assert [template.value for template in EnhancementTemplate] == list(ENHANCEMENT_TEMPLATES)
    assert [fmt.value for fmt in OutputFormat] == list(OUTPUT_FORMATS)
    # Names print as names, and compare equal to the integers messages carry.
    assert str(GenerationStatus(3)) == "SUCCESS" and f"{GenerationStatus.FAILED}" == "FAILED"
    assert GenerationStatus.SUCCESS == generation_pb2.GENERATION_STATUS_SUCCESS


async def test_generate_returns_the_picture_in_one_call(app: App, tmp_path: Path) -> None:
    async with AsyncClient(address(app), app.dev_api_key) as client:
        image = await client.generate(
            "a lighthouse at dusk",
            aspect_ratio=AspectRatio.LANDSCAPE,
            enhancement_template=EnhancementTemplate.PHOTOREALISTIC,
            meta={"campaign": "coast"},
        )
    assert isinstance(image, GeneratedImage)
    assert GenerationStatus(image.generation.status) is GenerationStatus.SUCCESS
    assert image.generation.aspect_ratio == "16:9"
    assert dict(image.generation.meta) == {"campaign": "coast"}
    assert (image.width, image.height, image.mime_type) == (1792, 1008, "image/png")
    with PILImage.open(io.BytesIO(image.data)) as picture:
        assert (picture.format, picture.size) == ("PNG", (1792, 1008))
    assert image.generation.output_image.file_size == len(image.data)
    saved = image.save(tmp_path / "out" / "lighthouse.png")
    assert saved.read_bytes() == image.data


async def test_sync_generate_and_run(app: App) -> None:
    def scenario() -> None:
        with Client(address(app), app.dev_api_key) as client:
            image = client.generate("a red fox in snow", aspect_ratio="9:16")
            assert (image.width, image.height) == (1008, 1792)
            assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
            # The model options pass through generate() as through create_generation().
            webp = client.generate("a kite", seed=7, output_format=OutputFormat.WEBP, model="local")
            assert (webp.mime_type, webp.generation.seed) == ("image/webp", 7)
            assert webp.data[:4] == b"RIFF"
            done = client.run("a red fox in snow", flow_id="")
            assert GenerationStatus(done.status) is GenerationStatus.SUCCESS
            assert not done.HasField("flow_id")
            assert client.read_image(done.output_image.id)[:8] == b"\x89PNG\r\n\x1a\n"

    await asyncio.to_thread(scenario)


async def test_a_failed_generation_raises_from_wait_run_and_generate(failing_app: App) -> None:
    async with AsyncClient(address(failing_app), failing_app.dev_api_key) as client:
        created = await client.create_generation("a red fox")
        with pytest.raises(GenerationFailed) as caught:
            await client.wait(created.id, timeout=60)
        failed = caught.value
        assert isinstance(failed, ImagegenError)
        assert failed.code == grpc.StatusCode.ABORTED
        assert failed.reason == failed.generation.error.code != ""
        assert failed.message == failed.generation.error.message != ""
        assert failed.generation.id == created.id
        assert GenerationStatus(failed.generation.status) is GenerationStatus.FAILED
        assert str(failed) == (
            f"ABORTED {failed.reason}: generation '{created.id}' failed: {failed.message}"
        )
        # check=False hands the FAILED generation back instead.
        returned = await client.wait(created.id, timeout=60, check=False)
        assert returned.status == GenerationStatus.FAILED and returned.id == created.id
        with pytest.raises(GenerationFailed):
            await client.run("a blue fox", timeout=60)
        with pytest.raises(GenerationFailed):
            await client.generate("a green fox", timeout=60)

    def blocking() -> GenerationFailed:
        with Client(address(failing_app), failing_app.dev_api_key) as client:
            try:
                client.generate("a grey fox", timeout=60)
            except GenerationFailed as error:
                return error
        raise AssertionError("generate did not raise")

    failed = await asyncio.to_thread(blocking)
    assert failed.generation.prompt.startswith("a grey fox")
