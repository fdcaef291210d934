"""Where the server is and who is calling: address, API key, channel options, call metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass

ADDRESS_ENV = "IMAGEGEN_ADDRESS"
API_KEY_ENV = "IMAGEGEN_API_KEY"
DEFAULT_ADDRESS = "127.0.0.1:50051"
API_KEY_HEADER = "x-api-key"
DEFAULT_TIMEOUT = 30.0
# How long wait() follows a generation before giving up (a hosted model may be slow).
DEFAULT_WAIT_TIMEOUT = 300.0
USER_AGENT = "imagegen-python/0.1"

# An upload is up to 5 MiB of bytes plus its fields (the server accepts 6 MiB).
MAX_MESSAGE_BYTES = 6 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.primary_user_agent", USER_AGENT),
    # Ping a quiet watch now and then so a dead server or a silent proxy is
    # noticed (the server permits one ping per 10 s).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # gRPC's own reconnect backoff starts at 1 s and grows to 120 s; while it
    # waits every call fails at once. Keep it short so that our retries and
    # watch reconnects find a restarted server within a second or two.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


@dataclass(frozen=True, slots=True)
class Target:
    """The server to call and the key to call it with."""

    address: str
    api_key: str | None

    @classmethod
    def resolve(cls, address: str | None, api_key: str | None) -> Target:
        """Arguments first, then IMAGEGEN_ADDRESS / IMAGEGEN_API_KEY, then the defaults."""
        return cls(
            address=address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
            api_key=api_key or os.environ.get(API_KEY_ENV) or None,
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call carries."""
        return ((API_KEY_HEADER, self.api_key),) if self.api_key else ()
