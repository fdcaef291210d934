"""What a resuming watch remembers between streams: the last revision (or cursor) it passed on."""

from __future__ import annotations

from imagegen_client._genrpc.imagegen.v1 import generation_pb2
from imagegen_client.messages import is_terminal, status_value

DELETED = generation_pb2.GENERATION_EVENT_TYPE_DELETED


class GenerationWatch:
    """The position of one WatchGeneration across reconnects.

    The server sends the current state first (unless its revision is at most
    ``since_revision``) and then every change in order, so reconnecting with
    the last revision passed on loses nothing; an event at or below it is a
    repeat and is dropped.
    """

    def __init__(self, generation_id: str, since_revision: int, follow: bool) -> None:
        self.generation_id = generation_id
        self.last_revision = since_revision
        self.follow = follow
        self._done = False

    def finished(self) -> bool:
        """Whether the last event passed on ends the watch (terminal without follow, or deleted)."""
        return self._done

    def request(self) -> generation_pb2.WatchGenerationRequest:
        """The request that (re)starts the stream right after the last revision passed on."""
        return generation_pb2.WatchGenerationRequest(
            id=self.generation_id, since_revision=self.last_revision, follow=self.follow
        )

    def accept(self, event: generation_pb2.GenerationEvent) -> bool:
        """Record ``event``; False when it repeats a revision already passed on."""
        if event.revision <= self.last_revision:
            return False
        self.last_revision = event.revision
        if event.type == DELETED or (not self.follow and is_terminal(event.generation)):
            self._done = True
        return True


class ProjectWatch:
    """The position of one WatchGenerations across reconnects: the last cursor passed on."""

    def __init__(self, flow_id: str, status: int | str | None, since_cursor: str) -> None:
        self.flow_id = flow_id
        self.status = status_value(status)
        self.cursor = since_cursor

    def request(self) -> generation_pb2.WatchGenerationsRequest:
        """The request that (re)starts the stream after the last cursor passed on."""
        return generation_pb2.WatchGenerationsRequest(
            flow_id=self.flow_id, status=self.status, since_cursor=self.cursor
        )

    def accept(self, event: generation_pb2.GenerationEvent) -> bool:
        """Record ``event``; False when its cursor was already passed on."""
        if event.cursor and event.cursor == self.cursor:
            return False
        if event.cursor:
            self.cursor = event.cursor
        return True
