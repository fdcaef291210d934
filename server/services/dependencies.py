"""What the gRPC edge needs of dependency outages (it reaches the store only through here)."""

from __future__ import annotations

from server.domain.outages import unavailable
from server.store.outages import Dependencies, outage_of

__all__ = ["Dependencies", "outage_of", "unavailable"]
