"""The protos' comments by element name, from the descriptor set genproto keeps beside genrpc/."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib import resources

from google.protobuf import descriptor_pb2

# genrpc/imagegen/v1/source_info.binpb (scripts/genproto.py writes it with the modules).
SOURCE_INFO = ("genrpc.imagegen.v1", "source_info.binpb")

# Numbers of the FileDescriptorProto / DescriptorProto fields a SourceCodeInfo path walks.
_FILE_MESSAGES, _FILE_ENUMS, _FILE_SERVICES = 4, 5, 6
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS = 2, 3, 4
_ENUM_VALUES, _SERVICE_METHODS = 2, 2


@cache
def comments() -> dict[str, str]:
    """Leading comments by full name: messages, fields, enums, values, services, methods."""
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(resources.files(SOURCE_INFO[0]).joinpath(SOURCE_INFO[1]).read_bytes())
    found: dict[str, str] = {}
    for file in files.file:
        names = dict(_names(file))
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            text = _clean(location.leading_comments)
            if name and text:
                found[name] = text
    return found


def comment(full_name: str) -> str:
    """The comment above ``full_name`` in the protos ("" if it has none)."""
    return comments().get(full_name, "")


def first_sentence(text: str) -> str:
    """The first sentence of a comment, for a summary."""
    head = text.split("\n\n")[0].replace("\n", " ")
    end = head.find(". ")
    return head if end < 0 else head[: end + 1]


def _clean(text: str) -> str:
    """A comment's lines without their leading space; lines of one paragraph joined."""
    paragraphs = [
        " ".join(line.strip() for line in part.splitlines()) for part in text.split("\n\n")
    ]
    return "\n\n".join(p for p in paragraphs if p)


Path = tuple[int, ...]


def _names(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[Path, str]]:
    """Every element's SourceCodeInfo path and full name."""
    package = f"{file.package}." if file.package else ""
    for i, message in enumerate(file.message_type):
        yield from _message((_FILE_MESSAGES, i), package + message.name, message)
    for i, enum in enumerate(file.enum_type):
        yield from _enum((_FILE_ENUMS, i), package + enum.name, enum)
    for i, service in enumerate(file.service):
        name = package + service.name
        yield (_FILE_SERVICES, i), name
        for j, method in enumerate(service.method):
            yield (_FILE_SERVICES, i, _SERVICE_METHODS, j), f"{name}.{method.name}"


def _message(
    path: Path, name: str, message: descriptor_pb2.DescriptorProto
) -> Iterator[tuple[Path, str]]:
    yield path, name
    for i, field in enumerate(message.field):
        yield (*path, _MESSAGE_FIELDS, i), f"{name}.{field.name}"
    for i, nested in enumerate(message.nested_type):
        yield from _message((*path, _MESSAGE_NESTED, i), f"{name}.{nested.name}", nested)
    for i, enum in enumerate(message.enum_type):
        yield from _enum((*path, _MESSAGE_ENUMS, i), f"{name}.{enum.name}", enum)


def _enum(
    path: Path, name: str, enum: descriptor_pb2.EnumDescriptorProto
) -> Iterator[tuple[Path, str]]:
    yield path, name
    # Enum values are scoped beside their enum, not inside it (protobuf's C++ rule).
    scope = name.rsplit(".", 1)[0] + "." if "." in name else ""
    for i, value in enumerate(enum.value):
        yield (*path, _ENUM_VALUES, i), scope + value.name
