"""Pictures from OpenAI's Images API (or any OpenAI-compatible server) through the `openai` SDK."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import openai
from openai.types import ImagesResponse

from server.engine.generators.base import GeneratedPicture, GenerateRequest, GeneratorError
from server.engine.generators.failures import (
    CONTENT_BLOCKED,
    MALFORMED_RESPONSE,
    MODEL_UNAVAILABLE,
    NO_IMAGE_RETURNED,
    by_http_status,
    malformed,
    retry_after_seconds,
    short,
    transient_or_none,
)
from server.engine.generators.pictures import read_picture

PROVIDER: Final = "openai"
# Error codes OpenAI gives a refused prompt or picture (moderation).
_BLOCK_CODES: Final = frozenset({"moderation_blocked", "content_policy_violation"})
_MODEL_CODES: Final = frozenset({"model_not_found", "invalid_model", "insufficient_quota"})
_EXTENSIONS: Final[dict[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}


def image_size(model: str, aspect_ratio: str) -> str:
    """The supported size nearest to ``aspect_ratio`` for ``model``.

    GPT Image models draw 1024x1024, 1536x1024 or 1024x1536; DALL·E 3 draws
    1024x1024, 1792x1024 or 1024x1792; DALL·E 2 draws squares only.
    """
    width, height = (int(part) for part in aspect_ratio.split(":"))
    if model.startswith("dall-e-2"):
        return "1024x1024"
    wide = "1792x1024" if model.startswith("dall-e-3") else "1536x1024"
    tall = "1024x1792" if model.startswith("dall-e-3") else "1024x1536"
    if width == height:
        return "1024x1024"
    return wide if width > height else tall


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def prompt_text(request: GenerateRequest) -> str:
    """The prompt, with the negative prompt spelled out (the Images API has no field for it)."""
    if not request.negative_prompt:
        return request.prompt
    return f"{request.prompt}\n\nAvoid: {request.negative_prompt}"


def classify(exc: Exception) -> GeneratorError:
    """One OpenAI SDK error as a GeneratorError (spec §7's classification)."""
    if isinstance(exc, openai.APIStatusError):
        body: Any = exc.body
        code = ""
        message = exc.message
        if isinstance(body, dict):
            detail = body.get("error", body)
            if isinstance(detail, dict):
                code = str(detail.get("code") or "")
                message = str(detail.get("message") or message)
        if code in _BLOCK_CODES:
            return GeneratorError(
                CONTENT_BLOCKED,
                f"openai blocked the request ({code}): {short(message)}",
                transient=False,
            )
        if code in _MODEL_CODES:
            return GeneratorError(
                MODEL_UNAVAILABLE, f"openai: {code}: {short(message)}", transient=False
            )
        return by_http_status(
            exc.status_code,
            short(message),
            PROVIDER,
            retry_after_seconds(dict(exc.response.headers)),
        )
    failed = transient_or_none(exc, PROVIDER)
    if failed is not None:
        return failed
    return malformed(PROVIDER, exc)


class OpenAIGenerator:
    """images.generate for a prompt, images.edit when there are reference pictures."""

    name = PROVIDER

    def __init__(self, *, api_key: str, base_url: str = "", timeout: float = 120.0) -> None:
        options: dict[str, Any] = {}
        if base_url:
            options["base_url"] = base_url
        # Retries are the engine's (one policy, bounded by max_attempts, honouring Retry-After).
        self._client = openai.AsyncOpenAI(
            api_key=api_key, timeout=timeout, max_retries=0, **options
        )

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        """Ask the model for one picture; raise GeneratorError on any failure."""
        model = request.model.partition("/")[2] or request.model
        params: dict[str, Any] = {
            "model": model,
            "prompt": prompt_text(request),
            "n": 1,
            "size": image_size(model, request.aspect_ratio),
        }
        if _is_gpt_image(model):
            # GPT Image models always answer base64 and can encode as asked.
            if request.output_format:
                params["output_format"] = request.output_format
        else:
            params["response_format"] = "b64_json"
        try:
            if request.references:
                files = [
                    (
                        f"reference-{i + 1}.{_EXTENSIONS.get(ref.mime_type, 'png')}",
                        ref.content,
                        ref.mime_type,
                    )
                    for i, ref in enumerate(request.references)
                ]
                response = await self._client.images.edit(image=files, **params)
            else:
                response = await self._client.images.generate(**params)
        except openai.OpenAIError as exc:
            raise classify(exc) from None
        except Exception as exc:
            raise classify(exc) from None
        return self._picture(response)

    def _picture(self, response: Any) -> GeneratedPicture:
        # The SDK does not validate bodies: a non-JSON page arrives as text, a JSON body
        # of the wrong shape as a half-filled model.
        data = getattr(response, "data", None)
        if not isinstance(response, ImagesResponse) or not isinstance(data, list | None):
            raise GeneratorError(
                MALFORMED_RESPONSE,
                "openai answered with something other than an Images API response "
                f"({short(response)[:120]})",
                transient=False,
            )
        first = data[0] if data else None
        encoded = getattr(first, "b64_json", None)
        if encoded is not None and not isinstance(encoded, str):
            raise GeneratorError(
                MALFORMED_RESPONSE, "openai sent b64_json that is not a string", transient=False
            )
        if not encoded:
            hint = " (it sent a URL; base64 was asked for)" if getattr(first, "url", None) else ""
            raise GeneratorError(
                NO_IMAGE_RETURNED, f"openai answered without an image{hint}", transient=False
            )
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise malformed(PROVIDER, exc) from None
        return read_picture(content, PROVIDER)

    async def close(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()
