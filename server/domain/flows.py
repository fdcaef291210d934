"""The Flow resource: a group of generations and images with its own alias map."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.domain.aliases import alias_problem
from server.domain.errors import ValidationErrors
from server.domain.ids import is_uuid


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow as stored, with its alias map (alias → image ID) and counts."""

    id: str
    project_id: str
    aliases: dict[str, str]
    generation_count: int
    image_count: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class FlowDeleted:
    """What deleting a flow removed."""

    id: str
    generations_deleted: int
    images_deleted: int


def check_flow_aliases(aliases: dict[str, str]) -> dict[str, str]:
    """Aliases to merge into a flow: each assignable, each naming an image ID.

    Reports every bad entry at once; image IDs come back lower-cased.
    """
    errors = ValidationErrors()
    checked: dict[str, str] = {}
    for alias, image_id in sorted(aliases.items()):
        name = f"aliases[{alias[:60]}]"
        problem = alias_problem(alias)
        if problem:
            errors.add(name, problem)
        if not is_uuid(image_id):
            errors.add(name, f"must map to an image ID (UUID), got {image_id[:60]!r}")
        checked[alias] = image_id.lower()
    errors.raise_if_any()
    return checked
