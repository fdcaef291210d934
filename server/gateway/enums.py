"""Enum values as the REST API spells them: lowercase, without the enum's UPPER_SNAKE prefix."""

from __future__ import annotations

import re

from google.protobuf.descriptor import EnumDescriptor, EnumValueDescriptor


def value_prefix(enum: EnumDescriptor) -> str:
    """The prefix buf's ENUM_VALUE_PREFIX rule puts on every value (``GENERATION_STATUS_``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", enum.name).upper() + "_"


def short_name(value: EnumValueDescriptor) -> str:
    """``GENERATION_STATUS_SUCCESS`` → ``success`` (a value without the prefix is just lowered)."""
    prefix = value_prefix(value.type)
    name = value.name
    return (name[len(prefix) :] if name.startswith(prefix) else name).lower()


def short_names(enum: EnumDescriptor) -> list[str]:
    """Every value's short name, in number order."""
    return [short_name(value) for value in sorted(enum.values, key=lambda v: v.number)]


def shorten(enum: EnumDescriptor, full_name: str | int) -> str | int:
    """The short name of a value as json_format prints it (a name, or a number it does not know)."""
    if isinstance(full_name, str) and full_name in enum.values_by_name:
        return short_name(enum.values_by_name[full_name])
    return full_name


def lookup(enum: EnumDescriptor, text: str) -> EnumValueDescriptor | None:
    """The value ``text`` names: a short name (any case), a full name, or a number."""
    if text in enum.values_by_name:
        return enum.values_by_name[text]
    wanted = text.strip().lower()
    for value in enum.values:
        if short_name(value) == wanted or value.name.lower() == wanted:
            return value
    if re.fullmatch(r"-?\d+", wanted):
        number = int(wanted)
        return enum.values_by_number.get(number)
    return None
