"""Resolve reference images: explicit IDs and aliases, then @mentions found in the prompt."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.aliases import prompt_mentions
from server.domain.errors import DomainError, Status, invalid
from server.domain.generations import ReferenceUse
from server.domain.ids import is_uuid
from server.domain.rules import MAX_REFERENCES
from server.store.images import get_image_row, resolve_alias_row


async def resolve_references(
    session: AsyncSession,
    project_id: str,
    explicit: tuple[str, ...],
    prompt: str,
    flow_id: str | None,
) -> list[ReferenceUse]:
    """Explicit references first (each must resolve), then prompt mentions that resolve."""
    uses: list[ReferenceUse] = []
    seen: set[str] = set()
    for ref in explicit:
        use = await _resolve_one(session, project_id, ref, flow_id)
        if use is None:
            raise DomainError(
                Status.NOT_FOUND,
                "REFERENCE_NOT_FOUND",
                f"reference image {ref!r} not found",
                metadata={"reference": ref},
            )
        if use.image_id not in seen:
            seen.add(use.image_id)
            uses.append(use)
    for mention in prompt_mentions(prompt):
        # A mention that names no image is just text (a handle, a hashtag-like word).
        use = await _resolve_one(session, project_id, mention, flow_id)
        if use is not None and use.image_id not in seen:
            seen.add(use.image_id)
            uses.append(use)
    if len(uses) > MAX_REFERENCES:
        names = ", ".join(u.alias or u.image_id for u in uses)
        raise invalid(
            "reference_images",
            f"at most {MAX_REFERENCES} references after adding the prompt's @mentions ({names})",
            reason="TOO_MANY_REFERENCES",
        )
    return uses


async def _resolve_one(
    session: AsyncSession, project_id: str, ref: str, flow_id: str | None
) -> ReferenceUse | None:
    if is_uuid(ref):
        row = await get_image_row(session, project_id, ref.lower())
        return ReferenceUse(row.id, None) if row is not None else None
    found = await resolve_alias_row(session, project_id, ref, flow_id)
    return ReferenceUse(found[0].id, ref) if found is not None else None
