"""Keeping the garbage collector off long-lived objects: frozen once they have survived.

CPython's full collection walks every tracked object. At startup that is the modules,
settings and engines; with thousands of open watch streams it is also their call
state, about 66 objects a stream: at W = 5,000 one full collection took 190 ms, and
when it fell during a change's fan-out every stream still waiting for its message
waited that much longer (delivery p99 at 1.8-2.4 times the bare server's, in every
one of six runs; docs/profiling.md, "Full collections during a fan-out").

So what survives a full collection is frozen (``gc.freeze``): the next one walks only
what is newer. Frozen objects are still freed when their last reference goes; only a
reference cycle among them would outlive its use, so every ``REFRESH_SECONDS`` they
are given back to the collector (one full walk) and frozen again after it.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Final

# How long a reference cycle among frozen objects can outlive its use.
REFRESH_SECONDS: Final = 600.0


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    # Called by the collector itself, in whichever thread ran it; freezing only moves
    # the generations' lists, and the collection is over by the "stop" phase.
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def settle() -> None:
    """Freeze what starting up made, and from now on whatever survives a full collection."""
    gc.collect()
    gc.freeze()
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def unsettle() -> None:
    """Undo ``settle``: stop freezing, and give every frozen object back."""
    while _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
    gc.unfreeze()


async def refresh_forever(period: float = REFRESH_SECONDS) -> None:
    """Every ``period``, give the frozen objects back to the collector; the next full
    collection walks them all once (and frees cycles among them), then freezes again."""
    while True:
        await asyncio.sleep(period)
        gc.unfreeze()
