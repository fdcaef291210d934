"""Typed settings, read once from IMAGEGEN_* environment variables (and CLI flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """Settings that cannot work together (found at start, before any work is taken)."""


class Settings(BaseSettings):
    """Every knob of the service, with its documented default.

    Each field is read from ``IMAGEGEN_<FIELD>`` (for example
    ``IMAGEGEN_GRPC_PORT``); ``imagegen serve`` flags override them.
    """

    model_config = SettingsConfigDict(env_prefix="IMAGEGEN_", extra="ignore")

    # --- network ---
    host: str = Field("127.0.0.1", description="Address the gRPC and HTTP servers bind to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (REST gateway, metrics).")
    http_enabled: bool = Field(True, description="Serve the REST gateway and /metrics over HTTP.")
    gateway_processes: int = Field(
        1,
        ge=0,
        le=64,
        description="REST gateway processes started beside the server on its HTTP port, each "
        "with an interpreter of its own (more for more REST load, up to the cores); 0: the "
        "gateway runs inside the server's process, sharing its interpreter lock.",
    )
    public_base_url: str = Field(
        "",
        description="Base of image URLs handed to clients; default http://HOST:HTTP_PORT.",
    )
    http_read_timeout_seconds: float = Field(
        15.0,
        gt=0,
        description="An HTTP client silent this long while sending a request (headers or "
        "body) is disconnected.",
    )
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        description="Bound on unary RPCs in flight; watch streams are admitted apart and "
        "health checks are always answered.",
    )
    max_open_streams: int = Field(
        20000, ge=1, description="Open watch streams this process accepts, from all keys."
    )
    max_streams_per_key: int = Field(
        2000, ge=1, description="Open watch streams this process accepts per API key."
    )
    keepalive_time_seconds: float = Field(
        30.0, gt=0, description="Ping a connection after this long without traffic."
    )
    keepalive_timeout_seconds: float = Field(
        10.0, gt=0, description="Close a connection whose ping is unanswered this long."
    )
    keepalive_permit_without_calls: bool = Field(
        True, description="Keep pinging connections with no RPC open (and allow clients to)."
    )
    keepalive_min_client_ping_seconds: float = Field(
        10.0, gt=0, description="Shortest interval between pings a client may send."
    )
    grpc_max_metadata_bytes: int = Field(
        65536,
        ge=8192,
        le=16 * 1024 * 1024,
        description="Largest metadata (headers) a gRPC call may carry; anything bigger is "
        "refused RESOURCE_EXHAUSTED by grpc itself, before authentication.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM: how long RPCs and jobs may take to finish."
    )

    # --- storage ---
    data_dir: Path = Field(Path("data"), description="Home of the embedded SQLite file and images.")
    database_url: str = Field(
        "", description="SQLAlchemy async URL; default SQLite at DATA_DIR/imagegen.db."
    )
    database_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="PostgreSQL: the most one connect, one wait for a pooled connection or one "
        "statement may take; past it the call answers UNAVAILABLE (a hung database server) "
        "instead of waiting on.",
    )
    s3_endpoint: str = Field(
        "", description="host:port of an S3 server; empty stores images under DATA_DIR/images."
    )
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field("imagegen", description="S3 bucket (created if missing).")
    s3_region: str = Field("", description="S3 region, if the server needs one.")
    s3_secure: bool = Field(False, description="Use TLS to reach the S3 server.")
    storage_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long one object store call may take before the caller gets "
        "UNAVAILABLE (a hung S3 server).",
    )
    readiness_interval_seconds: float = Field(
        2.0,
        gt=0,
        description="How often the database and object store are probed; readiness (health, "
        "/readyz) is false while either is unreachable.",
    )
    s3_public_endpoint: str = Field(
        "",
        description="Base URL clients reach the S3 server at (say https://s3.example.com); "
        "GetImageUrl's presigned URLs are built on it. Empty: S3_ENDPOINT.",
    )

    # --- delivery ---
    url_signing_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC key of GetImageUrl's signed gateway URLs (local image store); "
        "empty: a random key generated into DATA_DIR/url-signing-secret on first start. "
        "Every replica must share it.",
    )
    gateway_token: SecretStr = Field(
        SecretStr(""),
        description="Shared secret the gateway sends to the internal DeliveryService (public "
        "/cdn routes); empty: generated into DATA_DIR/gateway-token on first start. A "
        "separate `imagegen gateway` needs the same value.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For the gateway believes (for the live URLs' per-IP limit).",
    )
    live_auto_create_scopes: bool = Field(
        True,
        description="A live URL naming an unknown scope creates it (with the defaults); "
        "false: such a URL answers 404 until LiveService.CreateLiveScope makes the scope.",
    )
    live_ip_limit_per_hour: int = Field(
        10, ge=0, description="New live-URL generations per client IP per hour; 0: no limit."
    )
    live_wait_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a live-URL miss waits for its generation before answering "
        "503 with Retry-After.",
    )

    # --- engine ---
    workers: int = Field(
        4,
        ge=0,
        description="Generator calls at once in this process (0: no runs). A run waiting on "
        "its generator holds no thread and no database connection, so this may be in the "
        "thousands. A run's picture is stored and committed outside its slot, by at most as "
        "many runs again.",
    )
    draw_threads: int = Field(
        2, ge=1, description="Threads the local generator draws and encodes pictures on."
    )
    draw_processes: int = Field(
        0,
        ge=0,
        description="Above 0: the local generator draws in this many processes instead of "
        "IMAGEGEN_DRAW_THREADS threads, so drawing runs on other cores and leaves this "
        "process's GIL to the API and the engine (each process ~30 MB, started at the first "
        "picture). One that dies is replaced and its picture retried.",
    )
    create_batch_wait_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="While creates arrive less than this apart, or after creates that "
        "shared a transaction, a create waits for others to share its transaction (fewer "
        "commits and pages written per create, a few milliseconds more per create): until "
        "as many as last time have come, none came for this long, or five times this has "
        "passed. A create after a quiet spell that follows a lone one is written at once. "
        "0: only creates that arrive while one is being written share a transaction.",
    )
    claim_batch: int = Field(
        32,
        ge=1,
        description="Most generations one claim transaction takes (free slots permitting).",
    )
    lease_seconds: float = Field(
        30.0, gt=0, description="How long a claimed generation stays claimed without renewal."
    )
    max_attempts: int = Field(
        3, ge=1, description="Tries per run for transient generator errors (with backoff)."
    )
    retry_backoff_seconds: float = Field(0.5, ge=0, description="First retry delay; doubles.")
    retry_backoff_max_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest retry delay: between tries to store a picture, and before a "
        "generation whose run failed on a dependency is claimed again (delays are jittered "
        "between half and all of their value).",
    )
    poll_interval_seconds: float = Field(
        0.5,
        gt=0,
        description="How often idle workers and live-URL waits look for changes made by other "
        "replicas.",
    )
    watch_poll_seconds: float = Field(
        2.0,
        ge=0,
        description="How often one poller per process looks for changes whose notification "
        "was lost; 0 turns it off.",
    )
    watch_listen_notify: bool = Field(
        True,
        description="On PostgreSQL, hear other replicas' changes by LISTEN/NOTIFY "
        "(off: only the poller brings them).",
    )
    watch_queue_events: int = Field(
        256,
        ge=1,
        description="Events a watcher may fall behind before its stream ends with "
        "ABORTED (WATCH_TOO_SLOW).",
    )
    generator: Literal["local"] = Field(
        "local", description="The built-in generator (draws placeholders; see DEFAULT_MODEL)."
    )
    generator_format: Literal["png", "jpeg", "webp"] = Field(
        "png", description="Encoding of the local generator's images."
    )
    generator_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="Latency per image; the picture is drawn in its second half, as a hosted "
        "model's would be meanwhile (a call takes the longer of the delay and half of it plus "
        "the drawing).",
    )
    generator_max_side: int = Field(
        0,
        ge=0,
        description="Draw local pictures at most this many pixels a side (0: full size); "
        "with a delay, a hosted model whose pictures cost this process nothing.",
    )
    generator_fail_mode: Literal["none", "always", "transient", "flaky"] = Field(
        "none", description="Make the local generator fail (for tests)."
    )
    sweep_interval_seconds: float = Field(
        600.0, gt=0, description="How often unreferenced stored objects are looked for."
    )
    sweep_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="Only objects older than this are swept (younger ones may be in flight).",
    )
    event_retention_seconds: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="Outbox events older than this are deleted (each generation's latest "
        "stays); a watcher resuming from further back gets a snapshot.",
    )
    request_id_retention_seconds: float = Field(
        24 * 3600.0,
        gt=0,
        description="How long a request_id (Idempotency-Key) is remembered for replays.",
    )
    prune_interval_seconds: float = Field(
        3600.0,
        gt=0,
        description="How often old events, request_ids and finished webhook deliveries are "
        "deleted.",
    )

    # --- hosted models (spec §7) ---
    default_model: str = Field(
        "local",
        description="Model of generations that name none: local, openai/<model> or gemini/<model>.",
    )
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="OpenAI API key; set, it offers the openai/<model> models."
    )
    openai_base_url: str = Field(
        "", description="OpenAI-compatible API base URL (default: OpenAI's own, /v1 included)."
    )
    gemini_api_key: SecretStr = Field(
        SecretStr(""), description="Gemini API key; set, it offers the gemini/<model> models."
    )
    gemini_base_url: str = Field(
        "", description="Gemini API base URL, for proxies and tests (default: Google's)."
    )
    provider_timeout_seconds: float = Field(
        120.0, gt=0, description="Longest wait for one hosted model or LLM enhancer call."
    )
    enhancer: Literal["template", "openai", "gemini"] = Field(
        "template",
        description="Prompt enhancer: template, or an LLM through openai or gemini "
        "(falls back to template on failure).",
    )
    enhancer_model: str = Field(
        "",
        description="LLM of the openai/gemini enhancer (default gpt-4.1-mini, gemini-2.5-flash).",
    )

    # --- webhooks ---
    webhook_allow_private_addresses: bool = Field(
        False,
        description="Let webhook URLs resolve to private, loopback or link-local addresses "
        "(tests and private networks); refused otherwise.",
    )
    webhook_senders: int = Field(
        4, ge=0, description="Webhook deliveries sent at once by this process (0: none)."
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, description="Bound on one webhook attempt, DNS and answer included."
    )
    webhook_max_response_bytes: int = Field(
        64 * 1024, ge=0, description="At most this much of a receiver's answer is read."
    )
    webhook_first_retry_seconds: float = Field(
        5.0, gt=0, description="Delay before the first webhook retry; doubles (with jitter)."
    )
    webhook_max_retry_seconds: float = Field(
        600.0, gt=0, description="Longest delay between two webhook attempts."
    )
    webhook_retry_window_seconds: float = Field(
        86400.0, gt=0, description="After this long since the event, a delivery is given up."
    )
    webhook_delivery_retention_seconds: float = Field(
        30 * 24 * 3600.0,
        gt=0,
        description="Finished webhook deliveries (and their attempts) older than this are "
        "deleted; ones still being retried stay.",
    )

    # --- tenancy ---
    rate_limit_per_minute: int = Field(
        0, ge=0, description="Calls per minute allowed per API key; 0 turns the limit off."
    )
    api_key_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=5,
        description="How long a process trusts an API key it has read: a revoked key is "
        "refused on every replica within this bound (on PostgreSQL, as soon as the "
        "revocation's NOTIFY arrives; this bounds a lost one). 0: read the key on every call.",
    )
    rate_limit_burst: int = Field(
        0, ge=0, description="Calls a key may make at once above the steady rate (0: the rate)."
    )

    # --- operations ---
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_format: Literal["json", "console"] = Field("json", description="Log line format.")
    dev_project: bool = Field(
        True,
        description="On first start with an empty database, create the project `default` "
        "and print a project key.",
    )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'imagegen.db').resolve()}"

    @property
    def images_dir(self) -> Path:
        """Where the local image store keeps its files."""
        return self.data_dir / "images"
