"""Provider answers in their documented wire formats (OpenAI Images API, Gemini API, Imagen)."""

from __future__ import annotations

import base64
import io

from fake_provider import Reply, json_reply
from PIL import Image


def picture(width: int, height: int, fmt: str = "PNG", colour: str = "teal") -> bytes:
    """A real encoded picture of the given size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, fmt)
    return out.getvalue()


def b64(content: bytes) -> str:
    """Standard base64 text, as the providers send image bytes."""
    return base64.b64encode(content).decode()


# --- OpenAI Images API (POST /v1/images/generations, /v1/images/edits) ---


def openai_image(content: bytes, size: str = "1024x1024") -> Reply:
    """200 with one base64 image (the GPT Image models' answer)."""
    return json_reply(
        200,
        {
            "created": 1764518400,
            "background": "opaque",
            "data": [{"b64_json": b64(content)}],
            "output_format": "png",
            "quality": "high",
            "size": size,
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                "output_tokens": 4160,
                "total_tokens": 4210,
            },
        },
    )


def openai_error(status: int, message: str, code: str | None, kind: str, **headers: str) -> Reply:
    """An OpenAI error body: {"error": {message, type, param, code}}."""
    return json_reply(
        status,
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        **headers,
    )


def openai_blocked() -> Reply:
    """400 moderation_blocked: the safety system refused the prompt."""
    return openai_error(
        400,
        "Your request was rejected by the safety system. If you believe this is an error, "
        "contact us at help.openai.com and include the request ID req_123.",
        "moderation_blocked",
        "image_generation_user_error",
    )


def openai_no_image() -> Reply:
    """200 with an empty data list."""
    return json_reply(200, {"created": 1764518400, "data": []})


# --- Gemini API (POST /v1/models/{model}:generateContent) ---


def gemini_image(content: bytes, mime_type: str = "image/png", text: str = "") -> Reply:
    """200 with a candidate whose parts hold (optional text and) the inline image."""
    parts: list[dict[str, object]] = [{"text": text}] if text else []
    parts.append({"inlineData": {"mimeType": mime_type, "data": b64(content)}})
    return json_reply(
        200,
        {
            "candidates": [
                {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 12,
                "candidatesTokenCount": 1290,
                "totalTokenCount": 1302,
            },
            "modelVersion": "gemini-2.5-flash-image",
            "responseId": "fake-response-1",
        },
    )


def gemini_text(text: str, finish: str = "STOP") -> Reply:
    """200 with a text-only candidate (no image)."""
    return json_reply(
        200,
        {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": finish,
                    "index": 0,
                }
            ],
            "modelVersion": "gemini-2.5-flash-image",
        },
    )


def gemini_prompt_blocked(reason: str = "PROHIBITED_CONTENT") -> Reply:
    """200 with promptFeedback.blockReason and no candidates."""
    return json_reply(
        200,
        {
            "promptFeedback": {"blockReason": reason},
            "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
            "modelVersion": "gemini-2.5-flash-image",
        },
    )


def gemini_error(
    status: int, message: str, state: str, details: list[object] | None = None, **headers: str
) -> Reply:
    """A google.rpc.Status error body."""
    error: dict[str, object] = {"code": status, "message": message, "status": state}
    if details:
        error["details"] = details
    return json_reply(status, {"error": error}, **headers)


def retry_info(seconds: int) -> dict[str, str]:
    """google.rpc.RetryInfo as the Gemini API puts it in error details."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}


# --- Imagen on the Vertex AI API (POST /v1beta1/publishers/google/models/{model}:predict) ---


def imagen_image(content: bytes, mime_type: str = "image/png") -> Reply:
    """200 with one prediction."""
    return json_reply(
        200, {"predictions": [{"bytesBase64Encoded": b64(content), "mimeType": mime_type}]}
    )


def imagen_filtered(reason: str) -> Reply:
    """200 with a prediction filtered by responsible-AI rules."""
    return json_reply(200, {"predictions": [{"raiFilteredReason": reason}]})


def openai_chat(text: str, model: str = "gpt-4.1-mini") -> Reply:
    """200 Chat Completions answer with one assistant message."""
    return json_reply(
        200,
        {
            "id": "chatcmpl-fake1",
            "object": "chat.completion",
            "created": 1764518400,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100},
        },
    )
