"""openai/<model> through the real `openai` SDK against a local server speaking the Images API."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import pytest
from conftest import make_settings
from expect import until_terminal
from fake_provider import Reply
from harness import OPENAI_KEY, served
from PIL import Image
from provider_wire import (
    openai_blocked,
    openai_error,
    openai_image,
    openai_no_image,
    picture,
)

from genrpc.imagegen.v1 import generation_pb2 as g
from genrpc.imagegen.v1 import generation_pb2_grpc
from server.app import App

SUCCESS = g.GENERATION_STATUS_SUCCESS
FAILED = g.GENERATION_STATUS_FAILED


async def test_a_base64_image_is_stored_byte_for_byte_with_its_real_size(tmp_path: Path) -> None:
    returned = picture(1536, 1024)
    async with served(tmp_path) as s:
        s.fake.queue(openai_image(returned, "1536x1024"))
        done = await s.run(
            prompt="a red fox in snow",
            model="openai/gpt-image-1",
            aspect_ratio="16:9",
            auto_enhance=False,
            negative_prompt="people",
            seed=42,
        )
        assert done.status == SUCCESS, done.error
        content, mime = await s.content(done.output_image.id)

    assert content == returned and mime == "image/png"
    # The provider's pixels, not the 1792x1008 of the aspect-ratio table.
    assert (done.output_image.width, done.output_image.height) == (1536, 1024)
    assert done.output_image.mime_type == "image/png"
    assert done.model == "openai/gpt-image-1"
    assert done.seed == 42 and done.negative_prompt == "people"
    [request] = s.fake.received
    assert request.path == "/v1/images/generations"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = request.json()
    assert body["model"] == "gpt-image-1"
    assert body["size"] == "1536x1024"  # the nearest size GPT Image draws for 16:9
    assert body["prompt"].startswith("a red fox in snow")
    # The Images API has no negative prompt or seed field: the negative prompt is said in words.
    assert "Avoid: people" in body["prompt"]
    assert "seed" not in body


async def test_reference_images_go_to_images_edit(tmp_path: Path) -> None:
    first, second = picture(64, 64, colour="red"), picture(48, 32, "JPEG", colour="blue")
    returned = picture(1024, 1536)
    async with served(tmp_path) as s:
        refs = [await s.upload(first), await s.upload(second)]
        s.fake.queue(openai_image(returned, "1024x1536"))
        done = await s.run(
            prompt="the two of them together",
            model="openai/gpt-image-1",
            aspect_ratio="9:16",
            reference_images=refs,
            auto_enhance=False,
        )
        assert done.status == SUCCESS, done.error
        content, _ = await s.content(done.output_image.id)
    assert content == returned
    assert (done.output_image.width, done.output_image.height) == (1024, 1536)
    [request] = s.fake.received
    assert request.path == "/v1/images/edits"
    assert request.headers["content-type"].startswith("multipart/form-data")
    form = request.form()
    sent = [(ctype, data) for _, ctype, data in form["image[]"]]
    assert sent == [("image/png", first), ("image/jpeg", second)]
    assert request.field("model") == "gpt-image-1"
    assert request.field("size") == "1024x1536"
    assert request.field("prompt") == "the two of them together"


async def test_a_moderation_block_fails_content_blocked_with_the_reason(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(openai_blocked())
        done = await s.run(prompt="something forbidden", model="openai/gpt-image-1")
    assert done.status == FAILED
    assert done.error.code == "CONTENT_BLOCKED"
    assert "rejected by the safety system" in done.error.message
    assert len(s.fake.received) == 1  # a block is final: no retry


async def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path) -> None:
    returned = picture(1024, 1024)
    async with served(tmp_path) as s:
        s.fake.queue(
            openai_error(
                429,
                "Rate limit reached for images",
                "rate_limit_exceeded",
                "requests",
                **{"retry-after": "1"},
            ),
            openai_image(returned),
        )
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
        assert done.status == SUCCESS, done.error
        content, _ = await s.content(done.output_image.id)
    assert content == returned
    first, second = s.fake.received
    # The backoff is 0.01 s: only Retry-After explains a second's wait.
    assert second.at - first.at >= 0.95


async def test_500_then_success(tmp_path: Path) -> None:
    returned = picture(1024, 1024)
    async with served(tmp_path) as s:
        s.fake.queue(
            openai_error(
                500, "The server had an error processing your request.", None, "server_error"
            ),
            openai_image(returned),
        )
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
        content, _ = await s.content(done.output_image.id)
    assert done.status == SUCCESS and content == returned
    assert len(s.fake.received) == 2


async def test_500_every_time_fails_after_max_attempts(tmp_path: Path) -> None:
    async with served(tmp_path, max_attempts=2) as s:
        s.fake.default = lambda _: openai_error(502, "Bad gateway", None, "server_error")
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
    assert done.status == FAILED and done.error.code == "PROVIDER_UNAVAILABLE"
    assert "Bad gateway" in done.error.message
    assert len(s.fake.received) == 2


async def test_an_answer_without_an_image_fails_no_image_returned(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(openai_no_image())
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
    assert done.status == FAILED and done.error.code == "NO_IMAGE_RETURNED"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b'{"created": 1, "data": [{"b64_json": '),
        Reply(200, b"<html><body>Bad gateway page</body></html>", content_type="text/html"),
        Reply(200, b'{"created": "yesterday", "data": "none"}'),
    ],
    ids=["cut-json", "html", "wrong-shape"],
)
async def test_a_malformed_body_fails_clearly(tmp_path: Path, reply: Reply) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(reply)
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
    assert done.status == FAILED and done.error.code == "MALFORMED_RESPONSE"
    assert "Traceback" not in done.error.message and "openai" in done.error.message


async def test_base64_that_is_not_a_picture_fails_malformed(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(openai_image(b"this is not a picture"))
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
    assert done.status == FAILED and done.error.code == "MALFORMED_RESPONSE"


async def test_a_hung_provider_times_out_and_frees_the_generation(tmp_path: Path) -> None:
    async with served(tmp_path, provider_timeout_seconds=2.0, max_attempts=2) as s:
        s.fake.default = lambda _: Reply(hang=True)
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
    assert done.status == FAILED and done.error.code == "PROVIDER_TIMEOUT"
    # Both attempts ran and each waited the whole timeout (a lower bound: load cannot break it).
    assert done.processing_time_ms >= 2 * 2000
    # On a loaded machine the second attempt can time out before its request arrives.
    assert 1 <= len(s.fake.received) <= 2


async def test_a_bad_key_or_unknown_model_fails_model_unavailable(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(
            openai_error(
                401,
                "Incorrect API key provided: sk-test-***.",
                "invalid_api_key",
                "invalid_request_error",
            ),
            openai_error(
                404,
                "The model `gpt-image-9` does not exist.",
                "model_not_found",
                "invalid_request_error",
            ),
        )
        bad_key = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
        unknown = await s.run(prompt="a lighthouse", model="openai/gpt-image-9")
    assert (bad_key.status, bad_key.error.code) == (FAILED, "MODEL_UNAVAILABLE")
    assert (unknown.status, unknown.error.code) == (FAILED, "MODEL_UNAVAILABLE")
    assert "gpt-image-9" in unknown.error.message
    assert s.fake.received[1].json()["model"] == "gpt-image-9"


async def test_an_echoed_key_never_reaches_the_generation_error(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(
            openai_error(400, f"Key {OPENAI_KEY} may not draw this.", None, "invalid_request_error")
        )
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
    assert done.status == FAILED and done.error.code == "PROVIDER_REJECTED"
    assert OPENAI_KEY not in done.error.message and "***" in done.error.message


async def test_output_format_reencodes_what_the_provider_sent(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(openai_image(picture(1024, 1024)))
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1", output_format="webp")
        content, mime = await s.content(done.output_image.id)
    assert done.status == SUCCESS and done.output_format == "webp"
    assert mime == "image/webp" and Image.open(io.BytesIO(content)).format == "WEBP"
    assert s.fake.received[0].json()["output_format"] == "webp"


async def test_a_provider_removed_later_fails_its_reruns_model_unavailable(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(openai_image(picture(1024, 1024)))
        done = await s.run(prompt="a lighthouse", model="openai/gpt-image-1")
        assert done.status == SUCCESS, done.error
    # The same data, served without an OpenAI key: the stored generation still names openai.
    app = App(make_settings(tmp_path / "data"))
    await app.start()
    try:
        md = (("x-api-key", (tmp_path / "data" / "dev-api-key").read_text().strip()),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            gens = generation_pb2_grpc.GenerationServiceStub(channel)
            await gens.RegenerateGeneration(g.RegenerateGenerationRequest(id=done.id), metadata=md)
            rerun = await until_terminal(gens, done.id, md, 30)
    finally:
        await app.stop()
    assert (rerun.status, rerun.error.code) == (FAILED, "MODEL_UNAVAILABLE")
    assert "openai" in rerun.error.message and rerun.model == "openai/gpt-image-1"
