"""Typed views of protobuf descriptors (the stubs leave message and enum types optional)."""

from __future__ import annotations

from typing import cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

F = FieldDescriptor


def of(message: Message) -> Descriptor:
    """A message's descriptor."""
    return cast(Descriptor, message.DESCRIPTOR)


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    assert field.enum_type is not None, field.full_name
    return field.enum_type


def is_message(field: FieldDescriptor) -> bool:
    """Whether ``field`` holds messages (maps included)."""
    return bool(field.type == F.TYPE_MESSAGE)


def is_map(field: FieldDescriptor) -> bool:
    """Whether ``field`` is a ``map<…>`` field."""
    return is_message(field) and bool(message_type(field).GetOptions().map_entry)


def is_well_known(field: FieldDescriptor) -> bool:
    """Whether ``field`` holds a google.protobuf type (Struct, Timestamp, …)."""
    return is_message(field) and message_type(field).full_name.startswith("google.protobuf.")


def map_value(field: FieldDescriptor) -> FieldDescriptor:
    """The ``value`` field of a map field's entry."""
    return message_type(field).fields_by_name["value"]


def field_map(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by JSON (camelCase) name and by proto name: both are accepted."""
    fields: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        fields[field.name] = field
        fields[field.json_name] = field
    return fields
