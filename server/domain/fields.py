"""Field rules shared by generation and image requests: flow choice, alias, meta, request_id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from server.domain.aliases import alias_problem
from server.domain.errors import ValidationErrors
from server.domain.ids import is_uuid
from server.domain.rules import META_MAX_BYTES, REQUEST_ID_MAX_CHARS


class FlowMode(StrEnum):
    """The three meanings of a flow_id field."""

    NEW = "new"  # omitted: mint a flow
    NONE = "none"  # "": no flow
    GIVEN = "given"  # a UUID: that flow


@dataclass(frozen=True, slots=True)
class FlowChoice:
    """The three states of flow_id: mint a new flow, no flow, or a given flow."""

    mode: FlowMode
    flow_id: str | None = None


def flow_choice(errors: ValidationErrors, present: bool, value: str) -> FlowChoice:
    """Interpret flow_id: omitted → new flow, "" → none, UUID → that flow."""
    if not present:
        return FlowChoice(FlowMode.NEW)
    if value == "":
        return FlowChoice(FlowMode.NONE)
    if not is_uuid(value):
        errors.add("flow_id", "must be a UUID, or empty for no flow")
        return FlowChoice(FlowMode.NONE)
    return FlowChoice(FlowMode.GIVEN, value.lower())


def check_alias(errors: ValidationErrors, field_name: str, value: str) -> str | None:
    """An assignable alias or None, recording a violation if malformed."""
    if not value:
        return None
    problem = alias_problem(value)
    if problem:
        errors.add(field_name, problem)
    return value


def check_flow_alias(errors: ValidationErrors, value: str, flow: FlowChoice) -> str | None:
    """A flow alias, which needs a flow to live in."""
    flow_alias = check_alias(errors, "flow_alias", value)
    if flow_alias and flow.mode is FlowMode.NONE:
        errors.add("flow_alias", "needs a flow (do not set flow_id to empty)")
    return flow_alias


def check_meta(errors: ValidationErrors, meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata, recording a violation if it serializes past 16 KiB."""
    size = len(json.dumps(meta, separators=(",", ":")).encode())
    if size > META_MAX_BYTES:
        errors.add("meta", f"is {size} bytes serialized; at most {META_MAX_BYTES}")
    return meta


def check_request_id(errors: ValidationErrors, value: str) -> str | None:
    """The idempotency key, recording a violation if it is too long or odd."""
    if not value:
        return None
    if len(value) > REQUEST_ID_MAX_CHARS or not value.isprintable():
        errors.add("request_id", f"must be 1 to {REQUEST_ID_MAX_CHARS} printable characters")
    return value
