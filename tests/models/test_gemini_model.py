"""gemini/<model> through the real `google-genai` SDK against a local Gemini API server."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fake_provider import Reply
from harness import GEMINI_KEY, served
from provider_wire import (
    gemini_error,
    gemini_image,
    gemini_prompt_blocked,
    gemini_text,
    imagen_filtered,
    imagen_image,
    picture,
    retry_info,
)

from genrpc.imagegen.v1 import generation_pb2 as g

SUCCESS = g.GENERATION_STATUS_SUCCESS
FAILED = g.GENERATION_STATUS_FAILED
MODEL = "gemini/gemini-2.5-flash-image"
PATH = "/v1/models/gemini-2.5-flash-image:generateContent"


async def test_an_inline_image_is_stored_byte_for_byte_with_its_real_size(tmp_path: Path) -> None:
    returned = picture(1344, 768, "JPEG")
    async with served(tmp_path) as s:
        s.fake.queue(gemini_image(returned, "image/jpeg", text="Here is your fox."))
        done = await s.run(
            prompt="a red fox in snow",
            model=MODEL,
            aspect_ratio="16:9",
            seed=7,
            auto_enhance=False,
        )
        assert done.status == SUCCESS, done.error
        content, mime = await s.content(done.output_image.id)
    assert content == returned and mime == "image/jpeg"
    assert (done.output_image.width, done.output_image.height) == (1344, 768)
    assert done.model == MODEL and done.seed == 7
    [request] = s.fake.received
    assert request.path == PATH
    assert request.headers["x-goog-api-key"] == GEMINI_KEY
    body = request.json()
    assert body["contents"][0]["parts"] == [{"text": "a red fox in snow"}]
    config = body["generationConfig"]
    assert config["imageConfig"]["aspectRatio"] == "16:9"
    assert config["seed"] == 7
    assert set(config["responseModalities"]) == {"TEXT", "IMAGE"}


async def test_reference_images_are_inline_parts_before_the_prompt(tmp_path: Path) -> None:
    first, second = picture(64, 64, colour="red"), picture(40, 30, "JPEG", colour="blue")
    returned = picture(1024, 1024)
    async with served(tmp_path) as s:
        refs = [await s.upload(first), await s.upload(second)]
        s.fake.queue(gemini_image(returned))
        done = await s.run(
            prompt="put them side by side",
            model=MODEL,
            reference_images=refs,
            auto_enhance=False,
            negative_prompt="text, watermark",
        )
        assert done.status == SUCCESS, done.error
        content, _ = await s.content(done.output_image.id)
    assert content == returned
    parts = s.fake.received[0].json()["contents"][0]["parts"]
    # Protobuf JSON: the API reads either field spelling; the SDK sends URL-safe base64.
    blobs = [p["inlineData"] for p in parts[:2]]
    assert [b.get("mimeType", b.get("mime_type")) for b in blobs] == ["image/png", "image/jpeg"]
    assert [base64.urlsafe_b64decode(b["data"]) for b in blobs] == [first, second]
    assert parts[2]["text"].startswith("put them side by side")
    assert "Avoid: text, watermark" in parts[2]["text"]


async def test_a_blocked_prompt_fails_content_blocked_with_the_reason(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(gemini_prompt_blocked("PROHIBITED_CONTENT"))
        done = await s.run(prompt="something forbidden", model=MODEL)
    assert (done.status, done.error.code) == (FAILED, "CONTENT_BLOCKED")
    assert "PROHIBITED_CONTENT" in done.error.message
    assert len(s.fake.received) == 1


async def test_an_image_safety_finish_fails_content_blocked(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(gemini_text("", finish="IMAGE_SAFETY"))
        done = await s.run(prompt="something borderline", model=MODEL)
    assert (done.status, done.error.code) == (FAILED, "CONTENT_BLOCKED")
    assert "IMAGE_SAFETY" in done.error.message


async def test_429_waits_for_the_retry_delay_then_succeeds(tmp_path: Path) -> None:
    returned = picture(1024, 1024)
    async with served(tmp_path) as s:
        s.fake.queue(
            gemini_error(
                429,
                "Resource has been exhausted (e.g. check quota).",
                "RESOURCE_EXHAUSTED",
                [retry_info(1)],
            ),
            gemini_image(returned),
        )
        done = await s.run(prompt="a lighthouse", model=MODEL)
        assert done.status == SUCCESS, done.error
        content, _ = await s.content(done.output_image.id)
    assert content == returned
    first, second = s.fake.received
    # The backoff is 0.01 s: only the RetryInfo delay explains a second's wait.
    assert second.at - first.at >= 0.95


async def test_429_with_a_retry_after_header_is_honoured_too(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(
            gemini_error(
                429, "Too many requests.", "RESOURCE_EXHAUSTED", None, **{"retry-after": "1"}
            ),
            gemini_image(picture(1024, 1024)),
        )
        done = await s.run(prompt="a lighthouse", model=MODEL)
    assert done.status == SUCCESS, done.error
    first, second = s.fake.received
    assert second.at - first.at >= 0.95


async def test_500_then_success(tmp_path: Path) -> None:
    returned = picture(1024, 1024)
    async with served(tmp_path) as s:
        s.fake.queue(
            gemini_error(500, "An internal error has occurred.", "INTERNAL"), gemini_image(returned)
        )
        done = await s.run(prompt="a lighthouse", model=MODEL)
        content, _ = await s.content(done.output_image.id)
    assert done.status == SUCCESS and content == returned
    assert len(s.fake.received) == 2


async def test_a_text_only_answer_fails_no_image_returned(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(gemini_text("I can only describe a lighthouse in words."))
        done = await s.run(prompt="a lighthouse", model=MODEL)
    assert (done.status, done.error.code) == (FAILED, "NO_IMAGE_RETURNED")
    assert "describe a lighthouse" in done.error.message


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b'{"candidates": [{"content": '),
        Reply(200, b"<html><body>Bad gateway page</body></html>", content_type="text/html"),
        Reply(
            200,
            b'{"candidates": [{"content": {"parts": [{"inlineData": '
            b'{"mimeType": "image/png", "data": "%%% not base64 %%%"}}]}}]}',
        ),
    ],
    ids=["cut-json", "html", "bad-base64"],
)
async def test_a_malformed_body_fails_clearly(tmp_path: Path, reply: Reply) -> None:
    async with served(tmp_path) as s:
        s.fake.queue(reply)
        done = await s.run(prompt="a lighthouse", model=MODEL)
    assert (done.status, done.error.code) == (FAILED, "MALFORMED_RESPONSE")
    assert "Traceback" not in done.error.message


async def test_a_hung_provider_times_out(tmp_path: Path) -> None:
    async with served(tmp_path, provider_timeout_seconds=2.0, max_attempts=2) as s:
        s.fake.default = lambda _: Reply(hang=True)
        done = await s.run(prompt="a lighthouse", model=MODEL)
    assert (done.status, done.error.code) == (FAILED, "PROVIDER_TIMEOUT")
    # Both attempts ran and each waited the whole timeout (a lower bound: load cannot break it).
    assert done.processing_time_ms >= 2 * 2000
    # On a loaded machine the second attempt can time out before its request arrives.
    assert 1 <= len(s.fake.received) <= 2


async def test_a_bad_key_or_unknown_model_fails_model_unavailable(tmp_path: Path) -> None:
    key_invalid = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
    async with served(tmp_path) as s:
        s.fake.queue(
            gemini_error(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                [key_invalid],
            ),
            gemini_error(404, "models/gemini-9 is not found for API version v1.", "NOT_FOUND"),
        )
        bad_key = await s.run(prompt="a lighthouse", model=MODEL)
        unknown = await s.run(prompt="a lighthouse", model="gemini/gemini-9")
    assert (bad_key.status, bad_key.error.code) == (FAILED, "MODEL_UNAVAILABLE")
    assert (unknown.status, unknown.error.code) == (FAILED, "MODEL_UNAVAILABLE")
    assert s.fake.received[1].path == "/v1/models/gemini-9:generateContent"


async def test_imagen_models_draw_through_generate_images(tmp_path: Path) -> None:
    returned = picture(1408, 768)
    async with served(tmp_path) as s:
        s.fake.queue(imagen_image(returned))
        done = await s.run(
            prompt="a lighthouse at dusk",
            model="gemini/imagen-4.0-generate-001",
            aspect_ratio="21:9",
            negative_prompt="boats",
            auto_enhance=False,
        )
        assert done.status == SUCCESS, done.error
        content, _ = await s.content(done.output_image.id)
        s.fake.queue(imagen_filtered("Your prompt may violate our policies."))
        filtered = await s.run(prompt="something", model="gemini/imagen-4.0-generate-001")
    assert content == returned
    assert (done.output_image.width, done.output_image.height) == (1408, 768)
    request = s.fake.received[0]
    assert request.path.endswith("/models/imagen-4.0-generate-001:predict")
    assert request.headers["x-goog-api-key"] == GEMINI_KEY
    body = request.json()
    assert body["instances"] == [{"prompt": "a lighthouse at dusk"}]
    assert body["parameters"]["aspectRatio"] == "16:9"  # Imagen's nearest to 21:9
    assert body["parameters"]["negativePrompt"] == "boats"
    assert (filtered.status, filtered.error.code) == (FAILED, "CONTENT_BLOCKED")
    assert "violate" in filtered.error.message
