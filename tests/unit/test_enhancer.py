"""Tests for the template prompt enhancer."""

from __future__ import annotations

import re

import pytest

from server.domain.rules import ENHANCEMENT_TEMPLATES, PROMPT_MAX_CHARS
from server.engine.enhancers.template import TemplateEnhancer
from server.engine.generators.base import Enhancer

PROMPT = "a tabby cat asleep on a windowsill"

# Words each template's rewrite must bring in: the point of choosing that template.
EXPECTED_WORDS: dict[str, tuple[str, ...]] = {
    "general": ("detailed", "composition"),
    "photorealistic": ("photorealistic", "lens", "light"),
    "illustration": ("illustration", "linework"),
    "minimalist": ("minimalist", "negative space"),
    "sticker": ("die-cut", "white border"),
    "product": ("studio lighting", "clean background"),
    "comic": ("comic", "halftone", "ink"),
}


def segments(text: str) -> list[str]:
    """The comma- or full-stop-separated phrases of a prompt, normalised for comparison."""
    return [s.strip().lower() for s in re.split(r"[,.!?]", text) if s.strip()]


def test_satisfies_the_enhancer_protocol() -> None:
    enhancer: Enhancer = TemplateEnhancer()
    assert enhancer.name == "template"


def test_every_template_is_covered_by_the_expectations() -> None:
    assert set(EXPECTED_WORDS) == set(ENHANCEMENT_TEMPLATES)


@pytest.mark.parametrize("template", ENHANCEMENT_TEMPLATES)
async def test_each_template_keeps_the_prompt_and_adds_its_style(template: str) -> None:
    enhanced = await TemplateEnhancer().enhance(PROMPT, template)

    assert enhanced.startswith(PROMPT + ", ")
    lowered = enhanced.lower()
    for word in EXPECTED_WORDS[template]:
        assert word in lowered, (template, word, enhanced)
    assert len(enhanced) <= PROMPT_MAX_CHARS


@pytest.mark.parametrize("template", ENHANCEMENT_TEMPLATES)
async def test_the_rewrite_is_deterministic(template: str) -> None:
    enhancer = TemplateEnhancer()

    assert await enhancer.enhance(PROMPT, template) == await enhancer.enhance(PROMPT, template)


async def test_templates_give_different_rewrites() -> None:
    enhancer = TemplateEnhancer()

    rewrites = {await enhancer.enhance(PROMPT, t) for t in ENHANCEMENT_TEMPLATES}

    assert len(rewrites) == len(ENHANCEMENT_TEMPLATES)


@pytest.mark.parametrize("template", ["", "anime", "Photorealistic", "general "])
async def test_an_unknown_template_is_rejected(template: str) -> None:
    with pytest.raises(ValueError, match="unknown enhancement template"):
        await TemplateEnhancer().enhance(PROMPT, template)


@pytest.mark.parametrize("template", ENHANCEMENT_TEMPLATES)
async def test_aliases_are_preserved_verbatim(template: str) -> None:
    prompt = "@Mimi_2 chasing @rex-the-dog past @Mimi_2's bowl"

    enhanced = await TemplateEnhancer().enhance(prompt, template)

    assert enhanced.startswith(prompt)
    assert re.findall(r"@[\w-]+", enhanced) == re.findall(r"@[\w-]+", prompt)


@pytest.mark.parametrize("template", ENHANCEMENT_TEMPLATES)
async def test_the_result_never_exceeds_the_limit(template: str) -> None:
    enhancer = TemplateEnhancer()
    base = "a very long description of a harbour at dawn " * 100

    for length in (3900, 3950, 3980, 3995):
        prompt = base[:length].rstrip() + " end"
        enhanced = await enhancer.enhance(prompt, template)
        assert enhanced.startswith(prompt)
        assert len(enhanced) <= PROMPT_MAX_CHARS
        # Additions are dropped whole, never cut mid-phrase.
        assert not enhanced[len(prompt) :].endswith((" ", ","))

    near_full = base[: PROMPT_MAX_CHARS - 8]
    assert await enhancer.enhance(near_full, template) == near_full


async def test_a_long_prompt_gets_whatever_phrases_fit() -> None:
    prompt = "x" * 3950

    enhanced = await TemplateEnhancer().enhance(prompt, "photorealistic")

    assert PROMPT_MAX_CHARS - 40 < len(enhanced) <= PROMPT_MAX_CHARS
    assert enhanced.startswith(prompt + ", photorealistic")


@pytest.mark.parametrize("length", [PROMPT_MAX_CHARS, PROMPT_MAX_CHARS + 500])
async def test_a_prompt_at_or_over_the_limit_is_returned_unchanged(length: int) -> None:
    prompt = ("word " * length)[:length]

    assert await TemplateEnhancer().enhance(prompt, "general") == prompt


async def test_phrases_already_in_the_prompt_are_not_repeated() -> None:
    prompt = "A watch on marble, Studio  Lighting, CLEAN BACKGROUND"

    enhanced = await TemplateEnhancer().enhance(prompt, "product")

    lowered = re.sub(r"\s+", " ", enhanced.lower())
    assert lowered.count("studio lighting") == 1
    assert lowered.count("clean background") == 1
    assert "professional product photography" in lowered


async def test_hyphenation_differences_still_count_as_present() -> None:
    enhanced = await TemplateEnhancer().enhance("a die cut sticker of a fox", "sticker")

    assert "die-cut sticker" not in enhanced.lower()
    assert "white border" in enhanced


@pytest.mark.parametrize("template", ENHANCEMENT_TEMPLATES)
async def test_no_phrase_appears_twice(template: str) -> None:
    enhancer = TemplateEnhancer()
    once = await enhancer.enhance(PROMPT, template)

    twice = await enhancer.enhance(once, template)

    assert len(set(segments(twice))) == len(segments(twice))


async def test_a_finished_sentence_gets_a_new_sentence() -> None:
    enhanced = await TemplateEnhancer().enhance("A fox in the snow.", "comic")

    assert enhanced.startswith("A fox in the snow. Comic book style, ")
    assert enhanced.endswith(".")


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
async def test_a_blank_prompt_is_returned_unchanged(prompt: str) -> None:
    assert await TemplateEnhancer().enhance(prompt, "general") == prompt


async def test_trailing_whitespace_is_kept_and_separates() -> None:
    enhanced = await TemplateEnhancer().enhance("a fox in the snow\n", "minimalist")

    assert enhanced.startswith("a fox in the snow\nminimalist, ")
