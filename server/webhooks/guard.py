"""The SSRF guard: a webhook URL must resolve only to public addresses (unless allowed)."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from server.domain.errors import DomainError, Status
from server.domain.webhooks import is_public_address

DNS_TIMEOUT_SECONDS = 5.0


class RefusedAddressError(Exception):
    """The URL's host resolves to an address webhooks may not reach (or to none at all)."""


class ResolverUnavailableError(Exception):
    """DNS did not answer in time (a transient failure, not the URL's fault)."""


# getaddrinfo's "try again later" answers; any other failure means the name does not resolve.
_TRANSIENT_DNS = {socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", -11)}


async def check_destination(url: str, *, allow_private: bool) -> list[str]:
    """The addresses ``url``'s host resolves to; RefusedAddressError if any is not public.

    Every address must be public, so a name with one public and one private
    record cannot be used to reach the private one.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), DNS_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise ResolverUnavailableError(f"DNS did not answer for {host!r}") from None
    except socket.gaierror as error:
        if error.errno in _TRANSIENT_DNS:
            raise ResolverUnavailableError(f"DNS failed for {host!r}: {error}") from None
        raise RefusedAddressError(f"cannot resolve {host!r}: {error}") from None
    except OSError as error:
        raise RefusedAddressError(f"cannot resolve {host!r}: {error}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise RefusedAddressError(f"{host!r} has no address")
    if not allow_private:
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise RefusedAddressError(
                f"{host!r} resolves to a private, loopback or link-local address ({blocked[0]})"
            )
    return addresses


async def require_public(url: str, *, allow_private: bool) -> None:
    """Create-time form of the guard: INVALID_ARGUMENT (WEBHOOK_URL_REFUSED) for a refused URL,
    UNAVAILABLE (WEBHOOK_DNS_UNAVAILABLE) when DNS cannot answer now."""
    try:
        await check_destination(url, allow_private=allow_private)
    except ResolverUnavailableError as error:
        raise DomainError(
            Status.UNAVAILABLE,
            "WEBHOOK_DNS_UNAVAILABLE",
            f"webhook.url: {error}; try again",
            retry_after_seconds=1.0,
        ) from None
    except RefusedAddressError as error:
        raise DomainError(
            Status.INVALID_ARGUMENT,
            "WEBHOOK_URL_REFUSED",
            f"webhook.url: {error}",
            metadata={"field": "webhook.url"},
        ) from None
