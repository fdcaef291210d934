"""An enhancer that enriches a prompt with fixed style phrases for each enhancement template."""

from __future__ import annotations

import hashlib
import re
from typing import Final

from server.domain.rules import ENHANCEMENT_TEMPLATES, PROMPT_MAX_CHARS

# Per template: phrases always added, then groups of alternatives of which one is
# chosen from the prompt's hash, so that different prompts do not all read the same
# while the same prompt always gets the same rewrite.
_STYLES: Final[dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]]] = {
    "general": (
        ("highly detailed", "balanced composition", "sharp focus"),
        (
            ("rich colours", "harmonious colour palette", "vivid but natural colours"),
            ("soft natural light", "dramatic lighting", "warm ambient light"),
        ),
    ),
    "photorealistic": (
        ("photorealistic", "high dynamic range", "true-to-life textures"),
        (
            ("shot on a 35mm lens", "shot on an 85mm lens", "shot on a 50mm prime lens"),
            ("shallow depth of field", "f/1.8 aperture with soft bokeh", "f/8 with deep focus"),
            ("golden-hour lighting", "soft diffused daylight", "cinematic rim lighting"),
        ),
    ),
    "illustration": (
        ("digital illustration", "clean confident linework", "painterly shading"),
        (
            ("vibrant colour palette", "muted earthy palette", "warm storybook colours"),
            ("textured brushwork", "soft gradients", "gouache texture"),
        ),
    ),
    "minimalist": (
        ("minimalist", "simple geometric shapes", "generous negative space"),
        (
            ("limited colour palette", "two-tone colour scheme", "monochrome palette"),
            ("clean plain background", "soft neutral background"),
        ),
    ),
    "sticker": (
        ("die-cut sticker", "thick white border", "bold clean outlines", "flat vector colours"),
        (
            ("isolated on a plain background", "centred with even margins"),
            ("cute expressive style", "glossy finish", "subtle drop shadow"),
        ),
    ),
    "product": (
        ("professional product photography", "studio lighting", "clean background"),
        (
            ("softbox key light", "three-point lighting", "soft overhead light"),
            ("crisp reflections", "subtle contact shadow", "high-end commercial finish"),
            ("centred composition", "hero angle", "three-quarter view"),
        ),
    ),
    "comic": (
        ("comic book style", "bold ink outlines", "halftone shading"),
        (
            ("dynamic panel composition", "dramatic foreshortening", "action lines"),
            ("flat vivid colours", "cel-shaded colours", "retro four-colour print look"),
        ),
    ),
}

_NON_WORD_RE: Final = re.compile(r"[\W_]+")


def _normalised(text: str) -> str:
    """Lower-case words separated by single spaces, with a space at each end.

    So that "Die-cut," in a prompt matches the phrase "die-cut" as a whole word.
    """
    return " " + _NON_WORD_RE.sub(" ", text.lower()).strip() + " "


def style_phrases(prompt: str, template: str) -> list[str]:
    """The phrases ``template`` adds to ``prompt``, in order, without any the prompt already has."""
    try:
        always, alternatives = _STYLES[template]
    except KeyError:
        expected = ", ".join(ENHANCEMENT_TEMPLATES)
        raise ValueError(
            f"unknown enhancement template {template!r}; expected one of {expected}"
        ) from None
    digest = hashlib.sha256(f"{template}\x00{prompt}".encode()).digest()
    chosen = list(always) + [group[digest[i] % len(group)] for i, group in enumerate(alternatives)]
    present = _normalised(prompt)
    phrases: list[str] = []
    for phrase in chosen:
        key = _normalised(phrase)
        # Whole-word comparison: "studio lighting" is in the prompt, "studio light" is not.
        if key not in present:
            phrases.append(phrase)
            present += key
    return phrases


def enhance_prompt(prompt: str, template: str, *, max_chars: int = PROMPT_MAX_CHARS) -> str:
    """Return ``prompt`` verbatim followed by the template's style phrases, within ``max_chars``.

    Whole phrases are dropped from the end to fit; the caller's text is never cut.
    """
    phrases = style_phrases(prompt, template)
    body = prompt.rstrip()
    if not body:
        return prompt
    # Continue the caller's sentence, or start a new one after a full stop. Trailing
    # whitespace (a newline, say) already separates, and the prompt is kept verbatim.
    ends_sentence = body[-1] in ".!?"
    if prompt[-1].isspace():
        separator = ""
    elif ends_sentence or body[-1] in ",;:":
        separator = " "
    else:
        separator = ", "
    added = ""
    for phrase in phrases:
        text = phrase[0].upper() + phrase[1:] if ends_sentence and not added else phrase
        candidate = f"{added}, {text}" if added else text
        if len(prompt) + len(separator) + len(candidate) + (1 if ends_sentence else 0) > max_chars:
            break
        added = candidate
    if not added:
        return prompt
    if ends_sentence:
        added += "."
    return prompt + separator + added


class TemplateEnhancer:
    """Rewrites prompts by appending fixed, template-specific style phrases; no model involved."""

    name = "template"

    async def enhance(self, prompt: str, template: str) -> str:
        """Return the enhanced prompt for ``template`` (one of ENHANCEMENT_TEMPLATES)."""
        return enhance_prompt(prompt, template)
