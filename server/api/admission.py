"""Admission of RPCs: unary calls and open streams are counted apart, streams per key too."""

from __future__ import annotations

from server.domain.errors import DomainError, Status


class Admission:
    """Counts unary calls in flight and open streams (in all, and per API key) in this process.

    Streams never take unary slots, so thousands of idle watchers cannot turn
    other calls away; health checks and reflection are not counted at all.
    """

    def __init__(self, max_unary: int, max_streams: int, max_streams_per_key: int) -> None:
        self.max_unary = max_unary
        self.max_streams = max_streams
        self.max_streams_per_key = max_streams_per_key
        self.unary = 0
        self.streams = 0
        self._streams_by_key: dict[str, int] = {}

    def take_unary(self) -> None:
        """Take a unary slot (give it back with ``release_unary``), or raise RESOURCE_EXHAUSTED.

        A pair of calls rather than a context manager: this runs on every RPC.
        """
        if self.unary >= self.max_unary:
            raise DomainError(
                Status.RESOURCE_EXHAUSTED,
                "TOO_MANY_CALLS",
                f"this server is answering {self.max_unary} calls already; retry shortly",
                metadata={"limit": str(self.max_unary)},
                retry_after_seconds=1.0,
            )
        self.unary += 1

    def release_unary(self) -> None:
        """Give back a slot ``take_unary`` took."""
        self.unary -= 1

    def take_stream(self, key_id: str) -> None:
        """Take a stream slot of ``key_id`` (give it back with ``release_stream``), or raise
        RESOURCE_EXHAUSTED.

        A pair of calls rather than a context manager: an open stream would keep the
        manager and its generator alive for its whole life (memory per idle watcher).
        """
        held = self._streams_by_key.get(key_id, 0)
        if held >= self.max_streams_per_key:
            raise _too_many("this API key has", self.max_streams_per_key, "key")
        if self.streams >= self.max_streams:
            raise _too_many("this server has", self.max_streams, "server")
        self._streams_by_key[key_id] = held + 1
        self.streams += 1

    def release_stream(self, key_id: str) -> None:
        """Give back a slot ``take_stream`` took."""
        self.streams -= 1
        left = self._streams_by_key[key_id] - 1
        if left:
            self._streams_by_key[key_id] = left
        else:
            del self._streams_by_key[key_id]

    def streams_of(self, key_id: str) -> int:
        """Streams ``key_id`` holds open now."""
        return self._streams_by_key.get(key_id, 0)


def _too_many(holder: str, limit: int, scope: str) -> DomainError:
    return DomainError(
        Status.RESOURCE_EXHAUSTED,
        "TOO_MANY_STREAMS",
        f"{holder} {limit} watch streams open already; close one or retry later",
        metadata={"limit": str(limit), "scope": scope},
        retry_after_seconds=5.0,
    )
