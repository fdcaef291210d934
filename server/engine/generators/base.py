"""The generator plug-in interface: prompt, size and references in; picture bytes out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ReferencePicture:
    """A reference image's bytes, as the generator sees them."""

    content: bytes
    mime_type: str


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What to draw: the (possibly enhanced) prompt at an exact pixel size."""

    prompt: str
    width: int
    height: int
    # Different seeds give different pictures for the same prompt; a regeneration
    # uses a new seed so that it yields new content.
    seed: int
    references: tuple[ReferencePicture, ...] = field(default=())
    # Hosted models: which one (``provider/model`` or ``local``), the aspect ratio the
    # size came from, what to leave out, and the encoding asked for ("" = default).
    model: str = "local"
    aspect_ratio: str = "1:1"
    negative_prompt: str = ""
    output_format: str = ""


@dataclass(frozen=True, slots=True)
class GeneratedPicture:
    """Encoded picture bytes and what they are."""

    content: bytes
    mime_type: str
    width: int
    height: int


class GeneratorError(Exception):
    """A generator could not produce a picture.

    ``transient`` errors (timeouts, overload) are retried with backoff, waiting at
    least ``retry_after`` seconds when the provider said so; the others fail the
    generation at once with ``code`` and the message.
    """

    def __init__(
        self, code: str, message: str, *, transient: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to cross a process pool boundary.
        return (_rebuild_error, (self.code, self.message, self.transient, self.retry_after))


def _rebuild_error(
    code: str, message: str, transient: bool, retry_after: float | None = None
) -> GeneratorError:
    return GeneratorError(code, message, transient=transient, retry_after=retry_after)


class Generator(Protocol):
    """Turns a GenerateRequest into a picture."""

    name: str

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        """Draw the picture; raise GeneratorError on failure."""
        ...


class Enhancer(Protocol):
    """Rewrites a caller's prompt into a richer one, following a template."""

    name: str

    async def enhance(self, prompt: str, template: str) -> str:
        """Return the enhanced prompt for ``template`` (one of ENHANCEMENT_TEMPLATES)."""
        ...
