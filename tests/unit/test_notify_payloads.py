"""What the PostgreSQL listener makes of a NOTIFY's payload: a generation's change with its
revision (or without, from a replica of an older version), or an API key's change."""

from __future__ import annotations

from server.events.hub import EventHub
from server.events.listener import CHANNEL, NotifyListener, key_change_payload


class Recorder:
    """A ChangeListener that keeps what it is told."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str, int | None]] = []

    def changed(self, project_id: str, generation_id: str, revision: int | None) -> None:
        self.changes.append((project_id, generation_id, revision))

    def changed_everywhere(self) -> None:
        raise AssertionError("not expected")

    @property
    def watcher_count(self) -> int:
        return 0


def _heard(*payloads: str) -> tuple[Recorder, list[str | None], EventHub]:
    hub = EventHub()
    recorder = Recorder()
    keys: list[str | None] = []
    hub.add_listener(recorder)
    hub.add_key_listener(keys.append)
    listener = NotifyListener(
        "postgresql+asyncpg://imagegen@localhost/imagegen", hub, timeout_seconds=10.0
    )
    for payload in payloads:
        listener._on_notify(None, 0, CHANNEL, payload)
    return recorder, keys, hub


def test_a_change_carries_its_revision() -> None:
    recorder, keys, hub = _heard("p1 g1 success 7")
    assert recorder.changes == [("p1", "g1", 7)]
    assert keys == [] and not hub.work_available.is_set()


def test_an_older_replicas_change_has_no_revision_and_is_still_heard() -> None:
    recorder, _, hub = _heard("p1 g1 pending")
    assert recorder.changes == [("p1", "g1", None)]
    assert hub.work_available.is_set()  # pending: idle workers look


def test_a_key_change_reaches_the_key_cache_not_the_watchers() -> None:
    recorder, keys, _ = _heard(key_change_payload("k1"))
    assert keys == ["k1"] and recorder.changes == []
