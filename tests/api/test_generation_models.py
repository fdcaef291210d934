"""CreateGeneration model, seed, negative_prompt and output_format: validation, storage, use."""

from __future__ import annotations

import io
from collections.abc import Sequence

import grpc
import pytest
from expect import details, expect_error, until_terminal
from PIL import Image

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc, image_pb2, image_pb2_grpc
from server.domain.rules import SEED_MAX

Md = Sequence[tuple[str, str]]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> generation_pb2_grpc.GenerationServiceStub:
    return generation_pb2_grpc.GenerationServiceStub(channel)


async def content(channel: grpc.aio.Channel, image_id: str, md: Md) -> tuple[bytes, str]:
    data, mime = b"", ""
    call = image_pb2_grpc.ImageServiceStub(channel).ReadImageContent(
        image_pb2.ReadImageContentRequest(id_or_alias=image_id), metadata=md
    )
    async for chunk in call:
        data += chunk.data
        mime = mime or chunk.mime_type
    return data, mime


async def test_defaults_name_the_local_model_and_a_seed(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a kite"), metadata=auth)
    assert created.model == "local"
    assert 0 <= created.seed <= SEED_MAX
    assert created.negative_prompt == "" and created.output_format == ""
    fetched = await stub.GetGeneration(g.GetGenerationRequest(id=created.id), metadata=auth)
    assert (fetched.model, fetched.seed) == ("local", created.seed)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "midjourney/v7"}, "model"),
        ({"model": "local/big"}, "model"),
        ({"model": "openai/bad model name"}, "model"),
        ({"output_format": "gif"}, "output_format"),
        ({"seed": -1}, "seed"),
        ({"seed": SEED_MAX + 1}, "seed"),
        ({"negative_prompt": "x" * 4001}, "negative_prompt"),
    ],
)
async def test_bad_model_fields_are_invalid_argument(stub, auth: Md, fields, field) -> None:
    error = await expect_error(
        stub.CreateGeneration(g.CreateGenerationRequest(prompt="a kite", **fields), metadata=auth),
        INVALID,
        "VALIDATION_ERROR",
    )
    assert [name for name, _ in details(error)[1]] == [field]


@pytest.mark.parametrize(
    "model", ["openai/gpt-image-1", "gemini", "gemini/imagen-4.0-generate-001"]
)
async def test_a_provider_without_a_key_is_failed_precondition(stub, auth: Md, model) -> None:
    before = await stub.ListGenerations(g.ListGenerationsRequest(), metadata=auth)
    error = await expect_error(
        stub.CreateGeneration(
            g.CreateGenerationRequest(prompt="a kite", model=model), metadata=auth
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MODEL_UNAVAILABLE",
    )
    assert model.split("/")[0] in (error.details() or "")
    after = await stub.ListGenerations(g.ListGenerationsRequest(), metadata=auth)
    assert after.total == before.total  # nothing half-created


async def test_the_local_model_gives_the_same_bytes_for_the_same_prompt_and_seed(
    stub, channel, auth: Md
) -> None:
    async def draw(seed: int, prompt: str = "a red fox in snow") -> bytes:
        created = await stub.CreateGeneration(
            g.CreateGenerationRequest(prompt=prompt, seed=seed, model="local"), metadata=auth
        )
        done = await until_terminal(stub, created.id, auth)
        assert done.status == g.GENERATION_STATUS_SUCCESS and done.seed == seed
        return (await content(channel, done.output_image.id, auth))[0]

    first = await draw(1234)
    assert await draw(1234) == first
    assert await draw(1235) != first


async def test_output_format_picks_the_local_encoding(stub, channel, auth: Md) -> None:
    created = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a kite", output_format="JPEG", aspect_ratio="3:2"),
        metadata=auth,
    )
    assert created.output_format == "jpeg"
    done = await until_terminal(stub, created.id, auth)
    data, mime = await content(channel, done.output_image.id, auth)
    assert mime == "image/jpeg" == done.output_image.mime_type
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert Image.open(io.BytesIO(data)).size == (1536, 1024)


async def test_a_callers_seed_survives_regeneration_a_picked_one_does_not(stub, auth: Md) -> None:
    fixed = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a kite", seed=99, negative_prompt=" clouds "),
        metadata=auth,
    )
    picked = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a kite"), metadata=auth)
    for created in (fixed, picked):
        await until_terminal(stub, created.id, auth)
    again_fixed = await stub.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=fixed.id), metadata=auth
    )
    again_picked = await stub.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=picked.id), metadata=auth
    )
    assert again_fixed.seed == 99 and again_fixed.negative_prompt == "clouds"
    assert again_picked.seed != picked.seed


async def test_the_enhancer_that_ran_is_recorded(stub, auth: Md) -> None:
    created = await stub.CreateGeneration(g.CreateGenerationRequest(prompt="a kite"), metadata=auth)
    done = await until_terminal(stub, created.id, auth)
    assert done.enhanced_by == "template" and done.enhancement_fallback_reason == ""
    # A new run starts without the last run's enhancement, like its enhanced prompt.
    again = await stub.RegenerateGeneration(
        g.RegenerateGenerationRequest(id=created.id), metadata=auth
    )
    assert again.status == g.GENERATION_STATUS_PENDING and again.enhanced_by == ""
    assert (await until_terminal(stub, created.id, auth)).enhanced_by == "template"
    plain = await stub.CreateGeneration(
        g.CreateGenerationRequest(prompt="a kite", auto_enhance=False), metadata=auth
    )
    assert (await until_terminal(stub, plain.id, auth)).enhanced_by == ""
