"""Alias grammar, technical aliases, and the @mentions found in prompts."""

from __future__ import annotations

import re
from typing import Final

# "@" then letters, digits, "_" or "-"; 2..50 characters in all (spec §4.1).
ALIAS_RE: Final = re.compile(r"@[A-Za-z0-9_-]{1,49}")
TECHNICAL_ALIASES: Final = frozenset({"@last", "@first", "@upload"})
# A mention is an alias at the start of the prompt or after white space.
_MENTION_RE: Final = re.compile(r"(?:^|(?<=\s))(@[A-Za-z0-9_-]{1,49})(?![A-Za-z0-9_-])")


def is_alias(value: str) -> bool:
    """Whether ``value`` follows the alias grammar."""
    return ALIAS_RE.fullmatch(value) is not None


def alias_problem(value: str) -> str | None:
    """Why ``value`` cannot be assigned as an alias, or None if it can."""
    if not is_alias(value):
        return "must be '@' followed by 1 to 49 letters, digits, '_' or '-'"
    if value in TECHNICAL_ALIASES:
        return f"{value} is reserved (technical alias)"
    return None


def prompt_mentions(prompt: str) -> list[str]:
    """The @aliases written in a prompt, in order, without duplicates."""
    seen: dict[str, None] = {}
    for match in _MENTION_RE.finditer(prompt):
        seen.setdefault(match.group(1), None)
    return list(seen)
