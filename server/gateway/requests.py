"""Request messages built from path variables, query parameters, JSON bodies and headers."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server.gateway import enums
from server.gateway.descriptors import enum_type, field_map, is_map, map_value, message_type, of
from server.gateway.errors import GatewayError, invalid_fields

F = FieldDescriptor
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_TYPES = (F.TYPE_FLOAT, F.TYPE_DOUBLE)
# Well-known types whose JSON form is a string (so they also fit in a query parameter).
STRING_WKT = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}
WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}

Violations = list[tuple[str, str]]


def optional_string(field: FieldDescriptor) -> bool:
    """A proto3 ``optional string``: present-but-empty means something ("no flow")."""
    return bool(field.has_presence and field.type == F.TYPE_STRING and not field.is_repeated)


# --- JSON bodies ---------------------------------------------------------------------------


def from_json(message: Message, body: Any, *, exclude: Mapping[str, str] = {}) -> None:
    """Fill ``message`` from a parsed JSON body (camelCase or proto names, strict types).

    Unknown fields and values of the wrong JSON type are 400 VALIDATION_ERROR naming the
    field; enum values may be short names (``success``); ``null`` on an ``optional string``
    field means the empty string (for ``flowId``: no flow). ``exclude`` holds fields bound by
    the path: the body may repeat them only with the same value.
    """
    if not isinstance(body, dict):
        raise GatewayError(400, "MALFORMED_JSON", "the request body must be a JSON object")
    violations: Violations = []
    fields = field_map(of(message))
    for key, value in body.items():
        field = fields.get(key)
        if field is not None and field.name in exclude and value != exclude[field.name]:
            violations.append((key, "does not match the value in the path"))
    normalized = _normalize_message(of(message), body, "", violations)
    if violations:
        raise invalid_fields(violations, "request body")
    _parse(normalized, message)


def _normalize_message(
    descriptor: Descriptor, value: dict[str, Any], prefix: str, violations: Violations
) -> dict[str, Any]:
    fields = field_map(descriptor)
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        field = fields.get(key)
        if field is None:
            violations.append((path, "unknown field"))
            continue
        out[key] = _normalize_field(field, item, path, violations)
    return out


def _normalize_field(field: FieldDescriptor, value: Any, path: str, violations: Violations) -> Any:
    if value is None:
        return "" if optional_string(field) else None
    if is_map(field):
        if not isinstance(value, dict):
            violations.append((path, "must be a JSON object"))
            return value
        value_field = map_value(field)
        return {
            key: _normalize_single(value_field, item, f"{path}.{key}", violations)
            for key, item in value.items()
        }
    if field.is_repeated:
        if not isinstance(value, list):
            violations.append((path, "must be a JSON array"))
            return value
        return [
            _normalize_single(field, item, f"{path}[{i}]", violations)
            for i, item in enumerate(value)
        ]
    return _normalize_single(field, value, path, violations)


def _normalize_single(field: FieldDescriptor, value: Any, path: str, violations: Violations) -> Any:
    kind = field.type
    if kind == F.TYPE_MESSAGE:
        name = message_type(field).full_name
        if name == "google.protobuf.Value":
            return value
        if name in ("google.protobuf.Struct",) or not name.startswith("google.protobuf."):
            if not isinstance(value, dict):
                violations.append((path, "must be a JSON object"))
                return value
            if name == "google.protobuf.Struct":
                return value
            return _normalize_message(message_type(field), value, f"{path}.", violations)
        if name == "google.protobuf.ListValue" and not isinstance(value, list):
            violations.append((path, "must be a JSON array"))
        elif name in STRING_WKT and not isinstance(value, str):
            violations.append((path, "must be a string"))
        return value  # the other well-known types are checked by json_format
    if kind == F.TYPE_ENUM:
        return _enum_value(field, value, path, violations)
    if kind == F.TYPE_BOOL:
        if not isinstance(value, bool):
            violations.append((path, "must be true or false"))
        return value
    if kind == F.TYPE_STRING:
        if not isinstance(value, str):
            violations.append((path, "must be a string"))
        return value
    if kind == F.TYPE_BYTES:
        if not isinstance(value, str) or not _is_base64(value):
            violations.append((path, "must be a base64 string"))
        return value
    if kind in INT_RANGES:
        number = _integer(value)
        low, high = INT_RANGES[kind]
        if number is None:
            violations.append((path, "must be an integer"))
        elif not low <= number <= high:
            violations.append((path, f"must be between {low} and {high}"))
        return value
    if kind in FLOAT_TYPES:
        if not _is_number(value):
            violations.append((path, "must be a number"))
        return value
    return value


def _is_number(value: Any) -> bool:
    # Proto JSON also takes numbers as strings, and "NaN" / "Infinity".
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _enum_value(field: FieldDescriptor, value: Any, path: str, violations: Violations) -> Any:
    enum = enum_type(field)
    if isinstance(value, str | int) and not isinstance(value, bool):
        found = enums.lookup(enum, str(value))
        if found is not None:
            return found.name
    allowed = ", ".join(enums.short_names(enum))
    violations.append((path, f"must be one of {allowed}"))
    return value


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _is_base64(text: str) -> bool:
    # json_format accepts standard and URL-safe alphabets, with or without padding.
    normalized = text.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _parse(tree: dict[str, Any], message: Message) -> None:
    try:
        json_format.ParseDict(tree, message, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        # Whatever the checks above let through (say, a malformed Timestamp string).
        raise GatewayError(400, "VALIDATION_ERROR", f"invalid request: {error}") from None


# --- query parameters and path variables ---------------------------------------------------


def from_query(
    message: Message,
    params: Sequence[tuple[str, str]],
    *,
    path: Mapping[str, str] = {},
    what: str = "query",
) -> None:
    """Fill ``message`` from path variables and query parameters (``?limit=10&status=success``).

    Query names are the JSON or proto names, dotted for nested fields; repeated fields take
    the parameter once per value. Values are converted by the field's type (integers,
    booleans ``true``/``false``/``1``/``0``, enums by short or full name, well-known types
    in their JSON string form). Unknown names, fields bound by the path, and values that
    do not convert are 400 VALIDATION_ERROR.
    """
    tree: dict[str, Any] = {}
    violations: Violations = []
    for field_path, text in path.items():
        _place(of(message), tree, field_path, text, field_path, violations, path={})
    for name, text in params:
        _place(of(message), tree, name, text, name, violations, path=path)
    if violations:
        raise invalid_fields(violations, what)
    _parse(tree, message)


def _place(
    descriptor: Descriptor,
    tree: dict[str, Any],
    dotted: str,
    text: str,
    shown: str,
    violations: Violations,
    *,
    path: Mapping[str, str],
) -> None:
    parts = dotted.split(".")
    node = tree
    names: list[str] = []
    for depth, part in enumerate(parts):
        field = field_map(descriptor).get(part)
        if field is None:
            violations.append((shown, "unknown parameter"))
            return
        names.append(field.name)
        last = depth == len(parts) - 1
        if not last:
            if (
                field.type != F.TYPE_MESSAGE
                or field.is_repeated
                or message_type(field).full_name.startswith("google.protobuf.")
            ):
                violations.append((shown, "unknown parameter"))
                return
            node = node.setdefault(field.json_name, {})
            descriptor = message_type(field)
            continue
        if ".".join(names) in path:
            violations.append((shown, "is given by the path"))
            return
        value = _convert(field, text, shown, violations)
        if value is _INVALID:
            return
        if field.is_repeated and not is_map(field):
            node.setdefault(field.json_name, []).append(value)
        elif field.json_name in node:
            violations.append((shown, "is given more than once"))
        else:
            node[field.json_name] = value


_INVALID = object()


def _convert(field: FieldDescriptor, text: str, shown: str, violations: Violations) -> Any:
    """A query text as the JSON value json_format expects for ``field``."""
    kind = field.type
    if is_map(field):
        violations.append((shown, "a map cannot be given as a parameter"))
        return _INVALID
    if kind == F.TYPE_MESSAGE:
        name = message_type(field).full_name
        if name in STRING_WKT:
            return text
        if name in WRAPPERS:
            return _convert(message_type(field).fields_by_name["value"], text, shown, violations)
        violations.append((shown, "cannot be given as a parameter; send a JSON body"))
        return _INVALID
    if kind == F.TYPE_ENUM:
        found = enums.lookup(enum_type(field), text)
        if found is None:
            allowed = ", ".join(enums.short_names(enum_type(field)))
            violations.append((shown, f"must be one of {allowed}"))
            return _INVALID
        return found.name
    if kind == F.TYPE_BOOL:
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        violations.append((shown, "must be true or false"))
        return _INVALID
    if kind in INT_RANGES:
        number = _integer(text)
        low, high = INT_RANGES[kind]
        if number is None:
            violations.append((shown, "must be an integer"))
            return _INVALID
        if not low <= number <= high:
            violations.append((shown, f"must be between {low} and {high}"))
            return _INVALID
        return number
    if kind in FLOAT_TYPES:
        try:
            return float(text)
        except ValueError:
            violations.append((shown, "must be a number"))
            return _INVALID
    if kind == F.TYPE_BYTES and not _is_base64(text):
        violations.append((shown, "must be base64"))
        return _INVALID
    return text


# --- headers -------------------------------------------------------------------------------


def apply_idempotency_key(message: Message, key: str | None) -> None:
    """``Idempotency-Key`` → ``request_id``, where the request has one (a differing body: 400)."""
    if key is None or "request_id" not in of(message).fields_by_name:
        return
    key = key.strip()
    current: str = getattr(message, "request_id")  # noqa: B009 (a field, not an attribute)
    if current and current != key:
        raise invalid_fields([("requestId", "differs from the Idempotency-Key header")], "request")
    setattr(message, "request_id", key)  # noqa: B010
