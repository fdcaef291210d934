"""SQLAlchemy 2.x table models: projects, keys, flows, images, generations and their outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# A claim takes the longest-waiting due generation: by the time it became due (created,
# or handed back to be retried).
CLAIM_ORDER: Final = "coalesce(lease_expire_time, create_time)"
# The rows the engine's indexes keep (only these can be claimed or expire), as a literal:
# a partial index serves a query only if the query states its condition with constants.
UNFINISHED: Final = "status IN ('pending', 'processing')"

ID = String(36)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, even on SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite autoincrements only INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for the outbox.
SEQ = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every imagegen table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class ProjectRow(Base):
    """A tenant."""

    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime]
    # "whsec_" + base64 key: kept in the clear, since it signs (HMAC) every webhook.
    webhook_secret: Mapped[str | None] = mapped_column(String(80))


class ApiKeyRow(Base):
    """An API key: only a hash of its secret is kept."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    admin: Mapped[bool] = mapped_column(Boolean)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(128), unique=True)
    create_time: Mapped[datetime]
    expire_time: Mapped[datetime | None]
    revoke_time: Mapped[datetime | None]
    last_used_time: Mapped[datetime | None]


class FlowRow(Base):
    """A group of related generations and images."""

    __tablename__ = "flows"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, ForeignKey("projects.id", ondelete="CASCADE"))
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    __table_args__ = (Index("ix_flows_project_created", "project_id", "create_time", "id"),)


class FlowAliasRow(Base):
    """One entry of a flow's alias map; removed with its flow or its image."""

    __tablename__ = "flow_aliases"
    flow_id: Mapped[str] = mapped_column(
        ID, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(50), primary_key=True)
    image_id: Mapped[str] = mapped_column(
        ID, ForeignKey("images.id", ondelete="CASCADE"), index=True
    )


class ImageRow(Base):
    """A stored picture; ``object_key`` names the committed version of its bytes."""

    __tablename__ = "images"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, ForeignKey("projects.id", ondelete="CASCADE"))
    flow_id: Mapped[str | None] = mapped_column(ID, ForeignKey("flows.id", ondelete="SET NULL"))
    # No foreign key: generations.output_image_id points the other way, and a
    # cycle of constraints cannot be created on SQLite. Services keep it true.
    generation_id: Mapped[str | None] = mapped_column(ID, index=True)
    source: Mapped[str] = mapped_column(String(16))
    alias: Mapped[str | None] = mapped_column(String(50))
    mime_type: Mapped[str] = mapped_column(String(32))
    file_size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int]
    height: Mapped[int]
    focal_x: Mapped[float | None] = mapped_column(Float)
    focal_y: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, Any]]
    object_key: Mapped[str] = mapped_column(String(300))
    version: Mapped[int]
    etag: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("project_id", "alias", name="uq_images_project_alias"),
        Index("ix_images_project_created", "project_id", "create_time", "id"),
        Index("ix_images_flow_created", "flow_id", "source", "create_time"),
    )


class GenerationRow(Base):
    """One prompt-to-image job and its lifecycle, with the lease of the worker running it."""

    __tablename__ = "generations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, ForeignKey("projects.id", ondelete="CASCADE"))
    flow_id: Mapped[str | None] = mapped_column(ID, ForeignKey("flows.id", ondelete="SET NULL"))
    input_prompt: Mapped[str] = mapped_column(Text)
    enhanced_prompt: Mapped[str | None] = mapped_column(Text)
    auto_enhance: Mapped[bool] = mapped_column(Boolean)
    enhancement_template: Mapped[str] = mapped_column(String(32))
    aspect_ratio: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    output_image_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("images.id", ondelete="SET NULL")
    )
    requested_references: Mapped[list[str]]
    alias: Mapped[str | None] = mapped_column(String(50))
    flow_alias: Mapped[str | None] = mapped_column(String(50))
    meta: Mapped[dict[str, Any]]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    processing_time_ms: Mapped[int | None] = mapped_column(BigInteger)
    # run: bumped by regenerate/update (new content, new seed); attempt: runs started.
    run: Mapped[int]
    attempt: Mapped[int]
    revision: Mapped[int] = mapped_column(BigInteger)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expire_time: Mapped[datetime | None]
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    start_time: Mapped[datetime | None]
    complete_time: Mapped[datetime | None]
    # Hosted models (revision 0002). ``seed`` is the caller's seed; None: one per run.
    model: Mapped[str] = mapped_column(String(200), server_default="local")
    seed: Mapped[int | None] = mapped_column(BigInteger)
    negative_prompt: Mapped[str] = mapped_column(Text, server_default="")
    output_format: Mapped[str] = mapped_column(String(8), server_default="")
    enhanced_by: Mapped[str | None] = mapped_column(String(200))
    enhancement_fallback_reason: Mapped[str | None] = mapped_column(Text)
    # The slug of the live scope whose live URL made this generation, if one did.
    live_scope: Mapped[str | None] = mapped_column(String(63), default=None)
    # Job control: the per-run time limit and the deadline of the current run
    # (its queue time included), the cancel, and where webhooks go.
    timeout_ms: Mapped[int | None] = mapped_column(BigInteger)
    deadline_time: Mapped[datetime | None]
    cancel_time: Mapped[datetime | None]
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON)
    __table_args__ = (
        Index("ix_generations_project_created", "project_id", "create_time", "id"),
        Index("ix_generations_flow_created", "flow_id", "create_time"),
        Index("ix_generations_due", "status", "lease_expire_time"),
        # The claim's order (store/generations.py _CLAIMABLE) and the deadlines (the
        # expiry check, twice a second), over unfinished rows only: neither reads or
        # sorts the whole queue, and finished generations do not grow them.
        Index(
            "ix_generations_claim",
            text(CLAIM_ORDER),
            "create_time",
            postgresql_where=text(UNFINISHED),
            sqlite_where=text(UNFINISHED),
        ),
        Index(
            "ix_generations_deadline",
            "deadline_time",
            postgresql_where=text(UNFINISHED),
            sqlite_where=text(UNFINISHED),
        ),
    )


class GenerationReferenceRow(Base):
    """An image a generation used, and the alias it was named by."""

    __tablename__ = "generation_references"
    generation_id: Mapped[str] = mapped_column(
        ID, ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[str] = mapped_column(
        ID, ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[str | None] = mapped_column(String(50))


class IdempotencyKeyRow(Base):
    """A request_id already served, and the resource it produced (AIP-155)."""

    __tablename__ = "idempotency_keys"
    project_id: Mapped[str] = mapped_column(
        ID, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(ID)
    fingerprint: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime]


class GenerationEventRow(Base):
    """The outbox: one row per generation revision, the source of truth for watchers."""

    __tablename__ = "generation_events"
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ID)
    generation_id: Mapped[str] = mapped_column(ID)
    flow_id: Mapped[str | None] = mapped_column(ID)
    revision: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    snapshot: Mapped[dict[str, Any]]
    create_time: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("generation_id", "revision", name="uq_generation_events_revision"),
        # A project stream reads "project_id = ? AND seq > ? ORDER BY seq" and its head
        # "max(seq) WHERE project_id = ?": both walk this index, never the table.
        Index("ix_generation_events_project_seq", "project_id", "seq"),
    )


class EventHorizonRow(Base):
    """Per project, the highest outbox sequence number retention has deleted.

    A project watcher resuming from a cursor below it may have missed deleted
    events, so it is sent a snapshot of the present instead of the rows left.
    """

    __tablename__ = "event_horizons"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    pruned_seq: Mapped[int] = mapped_column(BigInteger)


class LiveScopeRow(Base):
    """A live scope: a named group of live-URL images with its generation policy."""

    __tablename__ = "live_scopes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, ForeignKey("projects.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(63))
    allow_new_generations: Mapped[bool] = mapped_column(Boolean)
    new_generations_limit: Mapped[int]
    meta: Mapped[dict[str, Any]]
    create_time: Mapped[datetime]
    last_generated_time: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("project_id", "slug", name="uq_live_scopes_slug"),
        Index("ix_live_scopes_project_created", "project_id", "create_time"),
    )


class LiveEntryRow(Base):
    """One cached live URL: its cache key and the generation that answers it.

    The primary key makes "one generation per key" hold across replicas: of two
    misses racing to insert the same key, one insert fails and joins the other.
    """

    __tablename__ = "live_entries"
    scope_id: Mapped[str] = mapped_column(
        ID, ForeignKey("live_scopes.id", ondelete="CASCADE"), primary_key=True
    )
    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation_id: Mapped[str] = mapped_column(
        ID, ForeignKey("generations.id", ondelete="CASCADE"), index=True
    )
    create_time: Mapped[datetime]


class WebhookDeliveryRow(Base):
    """The webhook outbox: one event to send, written with the change that caused it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(ID, primary_key=True)  # the webhook-id header
    project_id: Mapped[str] = mapped_column(ID, ForeignKey("projects.id", ondelete="CASCADE"))
    # No foreign key: the record of a delivery outlives a deleted generation.
    generation_id: Mapped[str] = mapped_column(ID, index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    snapshot: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    next_attempt_time: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claim_expire_time: Mapped[datetime | None]
    create_time: Mapped[datetime]
    finish_time: Mapped[datetime | None]
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_time"),
        Index("ix_webhook_deliveries_project_created", "project_id", "create_time", "id"),
    )


class WebhookAttemptRow(Base):
    """One try at sending a delivery: its answer, latency and error."""

    __tablename__ = "webhook_attempts"
    delivery_id: Mapped[str] = mapped_column(
        ID, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(primary_key=True)
    status_code: Mapped[int | None]
    latency_ms: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime]
