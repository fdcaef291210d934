"""Pictures from Google's Gemini image models (and Imagen) through the `google-genai` SDK."""

from __future__ import annotations

import json
from typing import Any, Final

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from server.engine.generators.base import GeneratedPicture, GenerateRequest, GeneratorError
from server.engine.generators.failures import (
    CONTENT_BLOCKED,
    MODEL_UNAVAILABLE,
    NO_IMAGE_RETURNED,
    REFERENCES_UNSUPPORTED,
    by_http_status,
    malformed,
    retry_after_seconds,
    short,
    transient_or_none,
)
from server.engine.generators.pictures import read_picture

PROVIDER: Final = "gemini"
# Finish reasons that mean the model refused to draw (types.FinishReason).
_BLOCKED_FINISH: Final = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)
# Imagen draws these aspect ratios; ours map to the nearest.
_IMAGEN_ASPECTS: Final[dict[str, str]] = {
    "1:1": "1:1",
    "16:9": "16:9",
    "9:16": "9:16",
    "3:2": "4:3",
    "21:9": "16:9",
}
# Google's own "bad key" answers are 400s with this reason in their details.
_KEY_REASONS: Final = ("API_KEY_INVALID", "API key not valid", "API_KEY_SERVICE_BLOCKED")


def is_imagen(model: str) -> bool:
    """Imagen models draw through generate_images; Gemini models through generate_content."""
    return model.startswith("imagen")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def _retry_delay(details: Any) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("7s") from an error body, if present."""
    error = details.get("error", details) if isinstance(details, dict) else None
    for item in (error or {}).get("details", []) if isinstance(error, dict) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None


def classify(exc: Exception) -> GeneratorError:
    """One google-genai error as a GeneratorError (spec §7's classification)."""
    if isinstance(exc, genai_errors.APIError):
        message = short(exc.message or exc.status or exc)
        details = json.dumps(exc.details) if exc.details is not None else ""
        if exc.code == 400 and any(reason in details for reason in _KEY_REASONS):
            return GeneratorError(
                MODEL_UNAVAILABLE, f"gemini refused the API key: {message}", transient=False
            )
        headers = getattr(getattr(exc, "response", None), "headers", None)
        retry_after = retry_after_seconds(dict(headers) if headers else None)
        if retry_after is None:
            retry_after = _retry_delay(exc.details)
        return by_http_status(int(exc.code or 0), message, PROVIDER, retry_after)
    failed = transient_or_none(exc, PROVIDER)
    if failed is not None:
        return failed
    return malformed(PROVIDER, exc)


class GeminiGenerator:
    """generate_content with image output (references as inline parts); Imagen via generate_images.

    Imagen is served by google-genai on the Vertex AI API only, so Imagen models
    use a second client in Vertex AI express mode (the same API key).
    """

    name = PROVIDER

    def __init__(self, *, api_key: str, base_url: str = "", timeout: float = 120.0) -> None:
        # google-genai takes its timeout in milliseconds; retries stay the engine's.
        options = types.HttpOptions(base_url=base_url or None, timeout=int(timeout * 1000))
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._imagen = genai.Client(vertexai=True, api_key=api_key, http_options=options)

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        """Ask the model for one picture; raise GeneratorError on any failure."""
        model = request.model.partition("/")[2] or request.model
        try:
            if is_imagen(model):
                return await self._imagen_picture(model, request)
            return await self._content_picture(model, request)
        except GeneratorError:
            raise
        except Exception as exc:
            raise classify(exc) from None

    async def _content_picture(self, model: str, request: GenerateRequest) -> GeneratedPicture:
        parts = [
            types.Part.from_bytes(data=ref.content, mime_type=ref.mime_type)
            for ref in request.references
        ]
        text = request.prompt
        if request.negative_prompt:
            # generate_content has no negative prompt field: say it in words.
            text = f"{text}\n\nAvoid: {request.negative_prompt}"
        parts.append(types.Part.from_text(text=text))
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=request.aspect_ratio),
            seed=request.seed,
            # No tools are offered: skip the SDK's function-calling loop (and its log line).
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        response = await self._client.aio.models.generate_content(
            model=model, contents=[types.Content(role="user", parts=parts)], config=config
        )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            reason = _enum_name(feedback.block_reason)
            detail = (
                f": {short(feedback.block_reason_message)}" if feedback.block_reason_message else ""
            )
            raise GeneratorError(
                CONTENT_BLOCKED, f"gemini blocked the prompt ({reason}){detail}", transient=False
            )
        said: list[str] = []
        finish = ""
        finish_message = ""
        for candidate in response.candidates or []:
            finish = _enum_name(candidate.finish_reason)
            finish_message = candidate.finish_message or ""
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.inline_data is not None and part.inline_data.data:
                    return read_picture(part.inline_data.data, PROVIDER)
                if part.text:
                    said.append(part.text)
        if finish in _BLOCKED_FINISH:
            detail = f": {short(finish_message)}" if finish_message else ""
            raise GeneratorError(
                CONTENT_BLOCKED, f"gemini refused to draw ({finish}){detail}", transient=False
            )
        note = f"; it said: {short(' '.join(said))}" if said else ""
        reason = f" (finish reason {finish})" if finish else ""
        raise GeneratorError(
            NO_IMAGE_RETURNED, f"gemini answered without an image{reason}{note}", transient=False
        )

    async def _imagen_picture(self, model: str, request: GenerateRequest) -> GeneratedPicture:
        if request.references:
            raise GeneratorError(
                REFERENCES_UNSUPPORTED,
                f"{model} draws from text only; use a Gemini image model for reference images",
                transient=False,
            )
        config = types.GenerateImagesConfig(
            number_of_images=1,
            aspect_ratio=_IMAGEN_ASPECTS.get(request.aspect_ratio, "1:1"),
            negative_prompt=request.negative_prompt or None,
            include_rai_reason=True,
        )
        response = await self._imagen.aio.models.generate_images(
            model=model, prompt=request.prompt, config=config
        )
        for generated in response.generated_images or []:
            if generated.image is not None and generated.image.image_bytes:
                return read_picture(generated.image.image_bytes, PROVIDER)
            if generated.rai_filtered_reason:
                raise GeneratorError(
                    CONTENT_BLOCKED,
                    f"gemini blocked the picture: {short(generated.rai_filtered_reason)}",
                    transient=False,
                )
        raise GeneratorError(
            NO_IMAGE_RETURNED, f"gemini ({model}) answered without an image", transient=False
        )

    async def close(self) -> None:
        """Close the SDK's HTTP connections."""
        for client in (self._client, self._imagen):
            closer = getattr(client.aio, "aclose", None)
            if closer is not None:
                await closer()
