"""The generators a deployment offers, keyed by provider: the one entry point of the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import structlog

from server.domain.models import LOCAL
from server.engine.generators.base import (
    GeneratedPicture,
    GenerateRequest,
    Generator,
    GeneratorError,
)
from server.engine.generators.failures import (
    GENERATOR_ERROR,
    MODEL_UNAVAILABLE,
    PROVIDER_TIMEOUT,
)
from server.engine.generators.pictures import reencode

log = structlog.get_logger("imagegen.generators")


class ClosableGenerator(Generator, Protocol):
    """A generator holding connections to close at shutdown."""

    async def close(self) -> None:
        """Release the generator's connections."""
        ...


class GeneratorRegistry:
    """Routes each request to its provider's generator, bounded in time, in the format asked.

    It is itself a Generator, so the engine needs to know nothing of providers.
    """

    name = "registry"

    def __init__(
        self,
        generators: Mapping[str, Generator],
        *,
        timeout_seconds: float,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._generators = dict(generators)
        self._timeout = timeout_seconds
        # Keys never appear in a generation's error, whatever a provider echoes back.
        self._secrets = tuple(s for s in secrets if s)

    @property
    def providers(self) -> frozenset[str]:
        """The providers with a generator."""
        return frozenset(self._generators)

    async def generate(self, request: GenerateRequest) -> GeneratedPicture:
        """Draw with the request's model; raise GeneratorError on failure."""
        provider = request.model.partition("/")[0] or LOCAL
        generator = self._generators.get(provider)
        if generator is None:
            raise GeneratorError(
                MODEL_UNAVAILABLE,
                f"model {request.model} is not available here: the {provider} provider is "
                "not configured",
                transient=False,
            )
        if provider == LOCAL:
            # CPU work of bounded size; it also encodes in the requested format itself.
            return await generator.generate(request)
        try:
            async with asyncio.timeout(self._timeout):
                picture = await generator.generate(request)
        except TimeoutError:
            # The SDKs have the same timeout; this bounds whatever they do between reads.
            raise GeneratorError(
                PROVIDER_TIMEOUT,
                f"{provider} did not answer within {self._timeout:g} s",
                transient=True,
            ) from None
        except GeneratorError as error:
            raise self._scrubbed(error) from None
        except Exception as exc:
            # A bug or an answer no adapter foresaw: fail this generation cleanly rather
            # than hand the lease back to fail the same way again and again.
            log.exception("generator_failed_unexpectedly", provider=provider)
            raise GeneratorError(
                GENERATOR_ERROR,
                f"the {provider} generator failed unexpectedly ({type(exc).__name__})",
                transient=False,
            ) from None
        return await asyncio.to_thread(reencode, picture, request.output_format)

    def _scrubbed(self, error: GeneratorError) -> GeneratorError:
        message = error.message
        for secret in self._secrets:
            message = message.replace(secret, "***")
        if message == error.message:
            return error
        return GeneratorError(
            error.code, message, transient=error.transient, retry_after=error.retry_after
        )

    async def close(self) -> None:
        """Close every generator that holds connections."""
        for generator in self._generators.values():
            closer = getattr(generator, "close", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.warning("generator_close_failed", provider=generator.name)
