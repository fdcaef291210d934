"""Model names, Retry-After, provider sizes, re-encoding and the registry's last line of defence."""

from __future__ import annotations

import asyncio
import email.utils
import io
import time

import pytest
from PIL import Image

from server.domain.models import parse_model, run_seed
from server.domain.rules import SEED_MAX
from server.engine.generators.base import GeneratedPicture, GenerateRequest, GeneratorError
from server.engine.generators.failures import retry_after_seconds
from server.engine.generators.openai import image_size
from server.engine.generators.pictures import read_picture, reencode
from server.engine.generators.registry import GeneratorRegistry


@pytest.mark.parametrize(
    ("text", "resolved"),
    [
        ("local", "local"),
        ("LOCAL", "local"),
        ("openai", "openai/gpt-image-1"),
        ("openai/dall-e-3", "openai/dall-e-3"),
        ("gemini", "gemini/gemini-2.5-flash-image"),
        ("gemini/imagen-4.0-generate-001", "gemini/imagen-4.0-generate-001"),
        ("openai/org/custom-model:v2", "openai/org/custom-model:v2"),
    ],
)
def test_model_names_resolve(text: str, resolved: str) -> None:
    assert str(parse_model(text)) == resolved


@pytest.mark.parametrize("text", ["dalle/3", "local/x", "openai/", "openai/a b", "gemini/../x"])
def test_bad_model_names_say_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_model(text)


def test_run_seeds_fit_every_provider_and_change_per_run() -> None:
    seeds = {run_seed("01a20000-0000-7000-8000-000000000000", run) for run in range(1, 50)}
    assert len(seeds) == 49 and all(0 <= s <= SEED_MAX for s in seeds)


def test_retry_after_in_seconds_milliseconds_or_a_date() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after_seconds({"Retry-After": date}) or 0) <= 31
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    ("model", "ratio", "size"),
    [
        ("gpt-image-1", "1:1", "1024x1024"),
        ("gpt-image-1", "21:9", "1536x1024"),
        ("gpt-image-1", "9:16", "1024x1536"),
        ("dall-e-3", "16:9", "1792x1024"),
        ("dall-e-3", "9:16", "1024x1792"),
        ("dall-e-2", "16:9", "1024x1024"),
    ],
)
def test_openai_sizes_are_the_nearest_supported(model: str, ratio: str, size: str) -> None:
    assert image_size(model, ratio) == size


def test_transparent_pictures_reencode_to_jpeg_over_white() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (20, 10), (0, 0, 0, 0)).save(out, "PNG")
    png = read_picture(out.getvalue(), "test")
    assert (png.mime_type, png.width, png.height) == ("image/png", 20, 10)
    jpeg = reencode(png, "jpeg")
    assert jpeg.mime_type == "image/jpeg"
    decoded = Image.open(io.BytesIO(jpeg.content))
    assert decoded.format == "JPEG" and decoded.getpixel((5, 5))[0] > 240  # type: ignore[index]
    assert reencode(png, "") is png and reencode(png, "png") is png


def test_bytes_that_are_no_picture_are_malformed() -> None:
    with pytest.raises(GeneratorError) as caught:
        read_picture(b"GIF89a but not really", "test")
    assert caught.value.code == "MALFORMED_RESPONSE" and not caught.value.transient


class _Broken:
    """An adapter with a bug: it raises something no classification foresaw."""

    name = "openai"

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        raise KeyError("data")


class _Slow:
    name = "gemini"

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        await asyncio.sleep(30)
        raise AssertionError("not reached")


async def test_the_registry_turns_any_adapter_failure_into_a_clean_generator_error() -> None:
    registry = GeneratorRegistry({"openai": _Broken(), "gemini": _Slow()}, timeout_seconds=0.2)
    request = GenerateRequest("a kite", 1024, 1024, 1, model="openai/gpt-image-1")
    with pytest.raises(GeneratorError) as caught:
        await registry.generate(request)
    assert (caught.value.code, caught.value.transient) == ("GENERATOR_ERROR", False)
    assert "KeyError" in caught.value.message
    with pytest.raises(GeneratorError) as timed_out:
        await registry.generate(GenerateRequest("a kite", 1024, 1024, 1, model="gemini/x"))
    assert (timed_out.value.code, timed_out.value.transient) == ("PROVIDER_TIMEOUT", True)
    with pytest.raises(GeneratorError) as missing:
        await registry.generate(GenerateRequest("a kite", 1024, 1024, 1, model="local"))
    assert missing.value.code == "MODEL_UNAVAILABLE"
