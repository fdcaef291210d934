"""LLM prompt enhancers (OpenAI chat, Gemini) that fall back to the template enhancer on failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from server.domain.rules import PROMPT_MAX_CHARS
from server.engine.enhancers.template import TemplateEnhancer, style_phrases
from server.engine.generators.base import Enhancer
from server.engine.generators.failures import PROVIDER_TIMEOUT, transient_or_none

log = structlog.get_logger("imagegen.enhancers")

DEFAULT_MODELS: Final[dict[str, str]] = {"openai": "gpt-4.1-mini", "gemini": "gemini-2.5-flash"}


@dataclass(frozen=True, slots=True)
class Enhancement:
    """An enhanced prompt, which enhancer wrote it, and why the LLM was skipped (if it was)."""

    prompt: str
    enhanced_by: str
    fallback_reason: str | None = None


class EnhancerFailedError(Exception):
    """An LLM enhancer gave no usable prompt; the message says why (never a key)."""


def system_prompt(template: str) -> str:
    """The instructions for one enhancement template."""
    style = ", ".join(style_phrases("", template))
    return (
        "You rewrite prompts for an image generation model. Keep the subject and every "
        "detail the user gave, in the user's language, and enrich the prompt with visual "
        f"detail in the {template} style ({style}). Keep any @alias words exactly as "
        "written. Answer with the rewritten prompt only: one paragraph, no quotes, no "
        f"preamble, at most {PROMPT_MAX_CHARS} characters."
    )


def _usable(text: str | None, original: str) -> str:
    prompt = (text or "").strip().strip('"').strip()
    if not prompt:
        raise EnhancerFailedError("the model answered with no text")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise EnhancerFailedError(f"the model answered {len(prompt)} characters")
    return prompt


class OpenAIEnhancer:
    """Chat Completions through the `openai` SDK."""

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout: float) -> None:
        import openai

        options: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self._client = openai.AsyncOpenAI(
            api_key=api_key, timeout=timeout, max_retries=0, **options
        )
        self._model = model
        self.name = f"openai/{model}"

    async def enhance(self, prompt: str, template: str) -> str:
        """The model's rewrite of ``prompt``; EnhancerFailedError when there is none."""
        import openai

        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": system_prompt(template)},
                    {"role": "user", "content": prompt},
                ],
            )
        except openai.APIStatusError as exc:
            raise EnhancerFailedError(f"openai answered {exc.status_code}") from None
        except openai.APITimeoutError:
            raise  # reported as a timeout by FallbackEnhancer
        except openai.OpenAIError as exc:
            raise EnhancerFailedError(f"openai failed ({type(exc).__name__})") from None
        choices = response.choices or []
        return _usable(choices[0].message.content if choices else None, prompt)

    async def close(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()


class GeminiEnhancer:
    """generate_content with a system instruction through the `google-genai` SDK."""

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout: float) -> None:
        from google import genai
        from google.genai import types

        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(base_url=base_url or None, timeout=int(timeout * 1000)),
        )
        self._model = model
        self.name = f"gemini/{model}"

    async def enhance(self, prompt: str, template: str) -> str:
        """The model's rewrite of ``prompt``; EnhancerFailedError when there is none."""
        from google.genai import errors, types

        try:
            response = await self._client.aio.models.generate_content(
                model=self._model,
                contents=prompt,
                config=types.GenerateContentConfig(
                    system_instruction=system_prompt(template),
                    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
                ),
            )
        except errors.APIError as exc:
            raise EnhancerFailedError(f"gemini answered {exc.code} {exc.status or ''}") from None
        text = response.text if response.candidates else None
        return _usable(text, prompt)

    async def close(self) -> None:
        """Close the SDK's HTTP connections."""
        closer = getattr(self._client.aio, "aclose", None)
        if closer is not None:
            await closer()


class ClosableEnhancer(Enhancer, Protocol):
    """An enhancer holding connections."""

    async def close(self) -> None:
        """Release its connections."""
        ...


class FallbackEnhancer:
    """An LLM enhancer, with the template enhancer taking over whenever it fails."""

    def __init__(self, primary: ClosableEnhancer, timeout: float) -> None:
        self._primary = primary
        self._template = TemplateEnhancer()
        self._timeout = timeout
        self.name = primary.name

    async def enhance(self, prompt: str, template: str) -> str:
        """The enhanced prompt (from whichever enhancer succeeded)."""
        return (await self.enhance_noted(prompt, template)).prompt

    async def enhance_noted(self, prompt: str, template: str) -> Enhancement:
        """The enhanced prompt, with who wrote it and why the LLM was skipped, if it was."""
        try:
            async with asyncio.timeout(self._timeout):
                text = await self._primary.enhance(prompt, template)
            return Enhancement(text, self._primary.name)
        except TimeoutError:
            reason = f"{self._primary.name} did not answer within {self._timeout:g} s"
        except EnhancerFailedError as exc:
            reason = f"{self._primary.name}: {exc}"
        except Exception as exc:
            # An answer the SDK could not read, or anything else: never fail the generation.
            failure = transient_or_none(exc, self._primary.name)
            if failure is not None and failure.code == PROVIDER_TIMEOUT:
                # The SDK's own timeout (the same length) fired first.
                reason = f"{self._primary.name} did not answer within {self._timeout:g} s"
            else:
                reason = f"{self._primary.name} failed ({type(exc).__name__})"
        log.warning("enhancer_fallback", enhancer=self._primary.name, reason=reason)
        fallback = await self._template.enhance(prompt, template)
        return Enhancement(fallback, self._template.name, reason)

    async def close(self) -> None:
        """Close the LLM client."""
        await self._primary.close()


async def enhance_noted(enhancer: Enhancer, prompt: str, template: str) -> Enhancement:
    """Run any enhancer, noting who wrote the prompt (and any fallback)."""
    if isinstance(enhancer, FallbackEnhancer):
        return await enhancer.enhance_noted(prompt, template)
    return Enhancement(await enhancer.enhance(prompt, template), enhancer.name)
