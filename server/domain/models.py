"""Model names (`provider/model`), which providers a deployment offers, and per-run seeds."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from server.domain.errors import DomainError, Status, ValidationErrors
from server.domain.rules import (
    MODEL_MAX_CHARS,
    OUTPUT_FORMATS,
    PROMPT_MAX_CHARS,
    PROVIDER_DEFAULT_MODELS,
    PROVIDERS,
    SEED_MAX,
)

LOCAL: Final = "local"
_MODEL_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*(/[A-Za-z0-9._:@-]+)*$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A resolved model: the provider and the provider's own model name."""

    provider: str
    name: str

    def __str__(self) -> str:
        return self.provider if self.provider == LOCAL else f"{self.provider}/{self.name}"


def parse_model(value: str) -> ModelRef:
    """``local``, ``provider`` or ``provider/model``; ValueError says what is wrong."""
    text = value.strip()
    provider, slash, name = text.partition("/")
    if slash and not name:
        raise ValueError(f"{text!r} names no model: write {provider}/<model>, or {provider} alone")
    provider = provider.lower()
    if provider not in PROVIDERS:
        raise ValueError(
            f"unknown provider {provider!r}; expected local, openai/<model> or gemini/<model>"
        )
    if provider == LOCAL:
        if name:
            raise ValueError("the local generator takes no model name: use `local`")
        return ModelRef(LOCAL, LOCAL)
    name = name or PROVIDER_DEFAULT_MODELS[provider]
    if len(text) > MODEL_MAX_CHARS or not _MODEL_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a model name")
    return ModelRef(provider, name)


def check_model(errors: ValidationErrors, value: str) -> ModelRef | None:
    """The model a request names (None: the deployment default), recording a violation."""
    if not value:
        return None
    try:
        return parse_model(value)
    except ValueError as exc:
        errors.add("model", str(exc))
        return None


def check_seed(errors: ValidationErrors, present: bool, value: int) -> int | None:
    """The caller's seed (None when omitted), recording a violation if out of range."""
    if not present:
        return None
    if not 0 <= value <= SEED_MAX:
        errors.add("seed", f"must be 0 to {SEED_MAX}")
    return value


def check_negative_prompt(errors: ValidationErrors, value: str) -> str:
    """The trimmed negative prompt, recording a violation if too long."""
    text = value.strip()
    if len(text) > PROMPT_MAX_CHARS:
        errors.add("negative_prompt", f"is {len(text)} characters; at most {PROMPT_MAX_CHARS}")
    return text


def check_output_format(errors: ValidationErrors, value: str) -> str:
    """``png``, ``jpeg``, ``webp`` or empty (the default), recording a violation otherwise."""
    fmt = value.strip().lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt and fmt not in OUTPUT_FORMATS:
        errors.add("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}, or empty")
    return fmt


def run_seed(generation_id: str, run: int) -> int:
    """The seed of a run when the caller gave none: stable for a run, new for each regeneration."""
    digest = hashlib.sha256(f"{generation_id}:{run}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & SEED_MAX


def model_unavailable(model: ModelRef) -> DomainError:
    """FAILED_PRECONDITION: the deployment has no key for the model's provider."""
    return DomainError(
        Status.FAILED_PRECONDITION,
        "MODEL_UNAVAILABLE",
        f"model {model} is not available here: the {model.provider} provider is not "
        f"configured (set IMAGEGEN_{model.provider.upper()}_API_KEY)",
        metadata={"model": str(model), "provider": model.provider},
    )


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """The providers this deployment offers and its default model."""

    default: ModelRef
    providers: frozenset[str]

    def resolve(self, requested: ModelRef | None) -> ModelRef:
        """The model a generation runs with; MODEL_UNAVAILABLE if its provider is not offered."""
        model = requested or self.default
        if model.provider not in self.providers:
            raise model_unavailable(model)
        return model


LOCAL_ONLY: Final = ModelCatalog(ModelRef(LOCAL, LOCAL), frozenset({LOCAL}))
