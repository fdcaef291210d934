"""Cross-replica fan-out on PostgreSQL: LISTEN for outbox and key NOTIFYs and tell the local hub."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from server.domain.tasks import cancel_and_wait
from server.events.hub import EventHub

log = structlog.get_logger("imagegen.events")

CHANNEL = "imagegen_events"
# A key change rides the same channel as generation changes, as "key <key id> <change>":
# three words, like a generation's "<project> <generation> <status>" (a project id is a
# UUID, never "key").
KEY_CHANGE_TAG = "key"
# How often a quiet LISTEN connection is checked. One whose server vanished without a word
# (a network partition, a failover to another host) ends no read and raises nothing: only
# a statement that gets no answer in time tells, and then the listener connects afresh.
LIVENESS_SECONDS: Final = 5.0


def key_change_payload(key_id: str, change: str = "revoked") -> str:
    """The NOTIFY payload telling every replica that API key ``key_id`` changed."""
    return f"{KEY_CHANGE_TAG} {key_id} {change}"


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The plain libpq-style DSN asyncpg understands, from a SQLAlchemy URL."""
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


class NotifyListener:
    """Keeps one LISTEN connection open; each NOTIFY tells the hub that a generation changed
    (or that an API key did).

    The fan-out then reads that change once for this process's watchers; a lost
    notification only delays it until the safety-net poll, and after a
    reconnect every channel is read again. A key change drops the key from this
    process's key cache; a lost one is bounded by the cache's TTL, and after a
    reconnect the whole cache is dropped.
    """

    def __init__(
        self,
        database_url: str,
        hub: EventHub,
        *,
        timeout_seconds: float,
        liveness_seconds: float = LIVENESS_SECONDS,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._hub = hub
        self._liveness_seconds = liveness_seconds
        # The most connecting, or one statement (LISTEN, the liveness check), may take.
        self._timeout = timeout_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._run(), name="notify-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            await cancel_and_wait(self._task)

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        if self._task is not None:
            self._task.cancel()

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        project_id, generation_id, status, *rest = payload.split(" ")
        if project_id == KEY_CHANGE_TAG:
            self._hub.notify_key(generation_id)
            return
        # "<project> <generation> <status> <revision>"; a replica of an older version
        # sends no revision.
        revision = int(rest[0]) if rest and rest[0].isdigit() else None
        # A webhook delivery the change queued is sent by the replica that made it (its
        # senders were woken there); the others find one left over at their next poll.
        # Waking them here would send every sender of every replica to look, per change.
        self._hub.notify(project_id, generation_id, deliveries=False, revision=revision)
        if status == "pending":
            self._hub.notify_work()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, timeout=self._timeout, command_timeout=self._timeout
                )
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                self.connected.set()
                self._hub.notify_everyone()  # changes may have passed while we were away
                delay = 0.5
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._liveness_seconds):
                            await lost.wait()
                    if not lost.is_set():
                        # No answer in time raises TimeoutError: handled below, as any
                        # other failure (a warning, then a fresh connection).
                        await connection.fetchval("SELECT 1")
                log.warning("notify_listener_lost")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database may be restarting
                log.warning(
                    "notify_listener_unavailable",
                    error=f"{type(error).__name__}: {error}",
                    retry_in=delay,
                )
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        # Bounded: a server that answers nothing never acknowledges the
                        # goodbye either (past the bound asyncpg just drops the socket).
                        await connection.close(timeout=self._timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
