"""Replies as REST JSON through a converter compiled once per message type.

The REST form of a reply is defined as protobuf's ``json_format.MessageToDict`` (camelCase
names, every field without presence printed) followed by two changes: enum values in their
short lowercase form and 64-bit integers as JSON numbers (``generic`` below does exactly
that). Walking the descriptors for every reply cost a REST read more CPU than parsing its
HTTP request; the converter here reads each message type's descriptor once and then only
touches the fields a message has. It yields the same dict, key order included (fields set,
in ``ListFields`` order, then the unset fields without presence in declaration order, as
json_format prints them), so the JSON bytes do not change.

It covers strings, booleans, integers, open enums and nested messages. Message types with
anything else (float and bytes fields, closed enums, enum values with options, extensions)
go through ``generic``, and so do the well-known types inside a reply (Struct, Value…),
except Timestamp and Duration, whose JSON string json_format takes from ``ToJsonString``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from server.gateway import enums
from server.gateway.descriptors import (
    enum_type,
    is_map,
    is_message,
    is_well_known,
    map_value,
    message_type,
    of,
)

F = FieldDescriptor
# None where json_format prints the value as it is (strings, booleans, 32-bit integers) or
# the REST form turns it back to what it is (64-bit integers, printed as strings).
Convert = Callable[[Any], Any] | None
Render = Callable[[Message], dict[str, Any]]

INT64_TYPES = (F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_SINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64)
INT32_TYPES = (F.TYPE_INT32, F.TYPE_UINT32, F.TYPE_SINT32, F.TYPE_FIXED32, F.TYPE_SFIXED32)
# Well-known types json_format prints as ``message.ToJsonString()``.
JSON_STRING_TYPES = ("google.protobuf.Timestamp", "google.protobuf.Duration")


def generic(message: Message) -> dict[str, Any]:
    """A reply as REST JSON the reference way: json_format, then reshaped by its descriptors."""
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _reshape(of(message), data)


def _reshape(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        key = field.json_name
        if key in data:
            data[key] = _reshape_field(field, data[key])
    return data


def _reshape_field(field: FieldDescriptor, value: Any) -> Any:
    if is_map(field):
        value_field = map_value(field)
        return {key: _reshape_single(value_field, item) for key, item in value.items()}
    if field.is_repeated:
        return [_reshape_single(field, item) for item in value]
    return _reshape_single(field, value)


def _reshape_single(field: FieldDescriptor, value: Any) -> Any:
    if field.type == F.TYPE_ENUM:
        return enums.shorten(enum_type(field), value)
    if field.type in INT64_TYPES and isinstance(value, str):
        return int(value)
    if is_message(field) and not is_well_known(field) and isinstance(value, dict):
        return _reshape(message_type(field), value)
    return value


def _well_known(value: Message) -> Any:
    """A well-known type nested in a reply, as json_format prints it (never reshaped)."""
    return json_format.MessageToDict(value, always_print_fields_with_no_presence=True)


def _struct(value: Message) -> Any:
    # An empty Struct (a reply's usual ``meta``) is {} without building a json_format printer.
    return _well_known(value) if value.fields else {}  # type: ignore[attr-defined]


def _json_string(value: Message) -> str:
    return value.ToJsonString()  # type: ignore[attr-defined, no-any-return]


# One converter per message type, compiled on first use (keyed by the descriptor's full name).
_compiled: dict[str, Render] = {}


def render(message: Message) -> dict[str, Any]:
    """A reply as REST JSON: the same dict as ``generic``, from the compiled converter."""
    descriptor = of(message)
    converter = _compiled.get(descriptor.full_name)
    if converter is None:
        converter = _compiled[descriptor.full_name] = _compile(descriptor)
    return converter(message)


class UnsupportedFieldError(Exception):
    """A field this converter does not print itself (its message goes through ``generic``)."""


def _compile(descriptor: Descriptor) -> Render:
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.extension_ranges:
        return generic
    try:
        converters = {
            field: (field.json_name, _field_converter(field)) for field in descriptor.fields
        }
    except UnsupportedFieldError:
        return generic
    # Fields without presence json_format prints when unset, in declaration order.
    defaults = tuple(
        (field.json_name, _default(field)) for field in descriptor.fields if not field.has_presence
    )

    def convert(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            for field, value in message.ListFields():
                name, to_json = converters[field]
                out[name] = value if to_json is None else to_json(value)
        except KeyError:  # an extension: not one of the type's own fields
            return generic(message)
        for name, default in defaults:
            if name not in out:
                out[name] = default()
        return out

    return convert


def _field_converter(field: FieldDescriptor) -> Convert:
    if is_map(field):
        key_field = message_type(field).fields_by_name["key"]
        value = _single(map_value(field)) or _same
        if key_field.type == F.TYPE_BOOL:
            return lambda items: {("true" if k else "false"): value(items[k]) for k in items}
        return lambda items: {str(k): value(items[k]) for k in items}
    single = _single(field)
    if field.is_repeated:
        if single is None:
            return list
        return lambda items: [single(item) for item in items]
    return single


def _single(field: FieldDescriptor) -> Convert:
    kind = field.type
    if kind in (F.TYPE_STRING, F.TYPE_BOOL) or kind in INT32_TYPES or kind in INT64_TYPES:
        return None
    if kind == F.TYPE_ENUM:
        names = _enum_names(enum_type(field))
        # An open enum's unknown number stays a number, as json_format prints it.
        return lambda number: names.get(number, number)
    if kind == F.TYPE_MESSAGE:
        nested = message_type(field)
        if nested.full_name in JSON_STRING_TYPES:
            return _json_string
        if nested.full_name == "google.protobuf.Struct":
            return _struct
        if nested.full_name.startswith("google.protobuf."):
            return _well_known
        return render
    raise UnsupportedFieldError(field.full_name)  # float, double, bytes, groups


def _enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Each number's short name, for an enum json_format prints by value name."""
    if enum.is_closed or any(value.GetOptions().ListFields() for value in enum.values):
        raise UnsupportedFieldError(enum.full_name)
    # values_by_number keeps the first name of an aliased number, as json_format does.
    return {number: enums.short_name(value) for number, value in enum.values_by_number.items()}


def _default(field: FieldDescriptor) -> Callable[[], Any]:
    """A fresh default value for a field without presence."""
    if is_map(field):
        return dict
    if field.is_repeated:
        return list
    printed = (_single(field) or _same)(field.default_value)
    return lambda: printed


def _same(value: Any) -> Any:
    return value
