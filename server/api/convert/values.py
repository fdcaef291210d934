"""Well-known-type conversions: timestamps and structs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime (None stays None, so the field stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    """A Struct holding a JSON object."""
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """A JSON object from a Struct."""
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result
