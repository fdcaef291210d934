"""HTTP routes read from the ``google.api.http`` annotations of the imagegen.v1 services."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from genrpc.imagegen.v1 import (
    admin_pb2,
    flow_pb2,
    generation_pb2,
    image_pb2,
    live_pb2,
    project_pb2,
)

# The services the gateway exposes, in the order their routes are documented.
SERVICES: tuple[ServiceDescriptor, ...] = (
    generation_pb2.DESCRIPTOR.services_by_name["GenerationService"],
    image_pb2.DESCRIPTOR.services_by_name["ImageService"],
    flow_pb2.DESCRIPTOR.services_by_name["FlowService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    live_pb2.DESCRIPTOR.services_by_name["LiveService"],
    project_pb2.DESCRIPTOR.services_by_name["ProjectService"],
)

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Binding:
    """One HTTP verb + path template bound to one RPC (an HttpRule or an additional binding)."""

    service: ServiceDescriptor
    method: MethodDescriptor
    verb: str
    template: str
    # The Starlette path: variables renamed v0, v1, … so that templates differing only in
    # variable names ("/images/{id}" and "/images/{id_or_alias}") share one route.
    pattern: str
    # The request field path each v<i> fills, in order.
    variables: tuple[str, ...]
    body: str
    response_body: str

    @property
    def full_method(self) -> str:
        """The gRPC method path, ``/imagegen.v1.GenerationService/GetGeneration``."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        """Whether the RPC streams its replies."""
        return bool(self.method.server_streaming)

    @property
    def creates(self) -> bool:
        """Whether a success answers 201 Created (Create… and Upload… methods, AIP-133 style)."""
        return self.verb == "POST" and self.method.name.startswith(("Create", "Upload"))

    def path_fields(self, params: dict[str, str]) -> dict[str, str]:
        """Starlette's path parameters (v0, v1, …) keyed by the request fields they fill."""
        return {field: params[f"v{i}"] for i, field in enumerate(self.variables)}


def parse_template(template: str) -> tuple[str, tuple[str, ...], tuple[int, ...]]:
    """A path template as (Starlette pattern, variable field paths, precedence key).

    Supports ``{field}``, ``{field=*}`` and ``{field=**}`` variables and a trailing
    ``:verb``; the precedence key puts literal segments before variables, position by
    position, so ``/images/resolve/{alias}`` is tried before ``/images/{id}/content``.
    """
    if not template.startswith("/"):
        raise ValueError(f"a path template starts with '/': {template!r}")
    variables: list[str] = []
    precedence: list[int] = []

    def rename(match: re.Match[str]) -> str:
        field, segments = match.group(1), match.group(2)
        name = f"v{len(variables)}"
        variables.append(field)
        if segments in (None, "*"):
            return "{" + name + "}"
        if segments == "**":
            return "{" + name + ":path}"
        raise ValueError(f"unsupported variable pattern {match.group(0)!r} in {template!r}")

    pattern = _VARIABLE.sub(rename, template)
    for segment in _VARIABLE.sub("{}", template).strip("/").split("/"):
        precedence.append(0 if "{" not in segment else 1)
    if "*" in _VARIABLE.sub("", template):
        raise ValueError(f"unnamed wildcards are not supported: {template!r}")
    return pattern, tuple(variables), tuple(precedence)


def _rules(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


def bindings(services: Sequence[ServiceDescriptor] = SERVICES) -> list[Binding]:
    """Every annotated RPC of ``services`` as bindings, most specific path first."""
    found: list[tuple[tuple[int, ...], Binding]] = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method.client_streaming:
                continue  # HTTP/1.1 JSON has no way to stream requests
            for rule in _rules(options.Extensions[annotations_pb2.http]):
                kind = rule.WhichOneof("pattern")
                if kind is None:
                    continue
                if kind == "custom":
                    verb, template = rule.custom.kind.upper(), rule.custom.path
                else:
                    verb, template = kind.upper(), getattr(rule, kind)
                pattern, variables, precedence = parse_template(template)
                binding = Binding(
                    service=service,
                    method=method,
                    verb=verb,
                    template=template,
                    pattern=pattern,
                    variables=variables,
                    body=rule.body,
                    response_body=rule.response_body,
                )
                found.append((precedence, binding))
    found.sort(key=lambda item: item[0])  # stable: ties keep the proto order
    return [binding for _, binding in found]


def by_pattern(all_bindings: Sequence[Binding]) -> dict[str, dict[str, Binding]]:
    """Bindings grouped by Starlette pattern, then by HTTP verb (precedence order kept)."""
    grouped: dict[str, dict[str, Binding]] = {}
    for binding in all_bindings:
        verbs = grouped.setdefault(binding.pattern, {})
        if binding.verb in verbs:
            other = verbs[binding.verb].full_method
            raise ValueError(
                f"{binding.verb} {binding.template}: both {other} and {binding.full_method}"
            )
        verbs[binding.verb] = binding
    return grouped
