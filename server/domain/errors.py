"""Domain errors: what went wrong, as a status name, a stable reason and field violations."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(Enum):
    """The outcome classes the API distinguishes (mapped 1:1 to gRPC codes by the api layer)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request and why it is bad."""

    field: str
    description: str


@dataclass(eq=False)
class DomainError(Exception):
    """An error the caller can act on.

    ``reason`` is a stable UPPER_SNAKE identifier (for google.rpc.ErrorInfo);
    ``message`` is for people and never contains secrets.
    """

    status: Status
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_seconds: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)


def invalid(field_name: str, description: str, reason: str = "VALIDATION_ERROR") -> DomainError:
    """A single bad field."""
    return DomainError(
        Status.INVALID_ARGUMENT,
        reason,
        f"{field_name}: {description}",
        (FieldViolation(field_name, description),),
    )


def not_found(kind: str, key: str) -> DomainError:
    """An unknown (or another project's) resource; ``kind`` like "generation"."""
    return DomainError(
        Status.NOT_FOUND,
        f"{kind.upper().replace(' ', '_')}_NOT_FOUND",
        f"{kind} {key!r} not found",
        metadata={"resource": kind, "id": key},
    )


class ValidationErrors:
    """Collects field violations so a request reports all its problems at once."""

    def __init__(self) -> None:
        self._violations: list[FieldViolation] = []

    def add(self, field_name: str, description: str) -> None:
        """Record one bad field."""
        self._violations.append(FieldViolation(field_name, description))

    def raise_if_any(self) -> None:
        """Raise one INVALID_ARGUMENT DomainError naming every recorded field."""
        if self._violations:
            text = "; ".join(f"{v.field}: {v.description}" for v in self._violations)
            raise DomainError(
                Status.INVALID_ARGUMENT, "VALIDATION_ERROR", text, tuple(self._violations)
            )
