"""``Prefer: wait=N``: hold a mutation's answer until its generation finishes or N seconds pass."""

from __future__ import annotations

import asyncio
import re

import grpc

from genrpc.imagegen.v1 import generation_pb2
from server.gateway.routing import Binding
from server.gateway.state import Gateway
from server.gateway.upstream import Metadata

# Longer waits are cut to this (and Preference-Applied says so): a proxy in front of the
# gateway typically drops a silent request after about a minute.
MAX_WAIT_SECONDS = 60
TERMINAL = (
    generation_pb2.GENERATION_STATUS_SUCCESS,
    generation_pb2.GENERATION_STATUS_FAILED,
    generation_pb2.GENERATION_STATUS_CANCELLED,
)
WATCH = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].methods_by_name[
    "WatchGeneration"
]
_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d+)\"?\s*$", re.IGNORECASE)


def waits(binding: Binding) -> bool:
    """Whether ``Prefer: wait`` applies: a change (not a read) that answers with a Generation."""
    return (
        binding.verb != "GET"
        and not binding.streaming
        and binding.method.output_type.full_name == generation_pb2.Generation.DESCRIPTOR.full_name
    )


def preferred_wait(prefer: str | None) -> int | None:
    """The seconds of a ``Prefer: wait=N`` preference (RFC 7240), capped; None without one.

    Preferences are comma-separated and may carry parameters after ``;``; an unreadable
    wait is ignored, as RFC 7240 asks of preferences a server does not understand.
    """
    if not prefer:
        return None
    for preference in prefer.split(","):
        match = _WAIT.match(preference.split(";", 1)[0])
        if match:
            return min(int(match.group(1)), MAX_WAIT_SECONDS)
    return None


async def until_done(
    gateway: Gateway,
    generation: generation_pb2.Generation,
    metadata: Metadata,
    seconds: float,
) -> generation_pb2.Generation:
    """The generation once SUCCESS, FAILED or CANCELLED, or its latest state after ``seconds``.

    Follows WatchGeneration from the returned revision, so no change in between is
    missed; a watch that fails (the generation was deleted, the API went away) answers
    with the latest state seen, since the change itself has already been made.
    """
    if generation.status in TERMINAL or seconds <= 0:
        return generation
    latest = generation
    request = generation_pb2.WatchGenerationRequest(
        id=generation.id, since_revision=generation.revision
    )
    call = gateway.upstream.stream(WATCH)(request, metadata=metadata, timeout=seconds + 1)
    closing = asyncio.ensure_future(gateway.closing.wait())
    read: asyncio.Future[object] | None = None
    try:
        async with asyncio.timeout(seconds):
            while True:
                read = asyncio.ensure_future(call.read())
                await asyncio.wait({read, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    break  # the gateway is shutting down
                event = read.result()
                if not isinstance(event, generation_pb2.GenerationEvent):
                    break  # EOF: the watch ended
                if event.type == generation_pb2.GENERATION_EVENT_TYPE_DELETED:
                    break
                latest = event.generation
                if latest.status in TERMINAL:
                    break
    except (TimeoutError, grpc.aio.AioRpcError):
        pass
    finally:
        for task in (read, closing):
            if task is not None and not task.done():
                task.cancel()
        call.cancel()
        await asyncio.gather(*(t for t in (read, closing) if t is not None), return_exceptions=True)
    return latest
