"""The processes a benchmark measures: `imagegen serve`, the bare echo server, and the backends.

Every benchmark runs the server under test and its baseline each in a process of its
own, and drives the load from the process that imports this module, so the client's
CPU is never the server's. The backends are the ones the tests use: SQLite + a local
directory (the defaults), or embedded PostgreSQL + SeaweedFS S3 (their start-up code
lives in tests/ and is reused here).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import scratch_dir

ROOT = Path(__file__).resolve().parent.parent
# The embedded servers' start-up code lives with the tests that use it most.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

ECHO_METHOD = "/bench.Echo/Echo"
START_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL; idempotent."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@dataclass
class Serve:
    """One `imagegen serve` process (gRPC and, when asked, the REST gateway on HTTP)."""

    data_dir: Path
    env: dict[str, str]
    http: bool = False
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    # Put before "-m server" (e.g. bench/traced.py and its flags, to trace its memory).
    launcher: tuple[str, ...] = ()
    # The checkout whose `server` package runs ("-m server" from there): another one
    # compares two versions with the same benchmark.
    root: Path = ROOT
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"serve-{self.grpc_port}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Serve:
        """Start it and wait until health answers SERVING (and HTTP listens, if asked)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, *self.launcher, "-m", "server", "serve"]
        command += ["--grpc-port", str(self.grpc_port)]
        command += ["--http-port", str(self.http_port)] if self.http else ["--no-http"]
        command += ["--data-dir", str(self.data_dir)]
        env = {**os.environ, "IMAGEGEN_LOG_LEVEL": "warning", **self.env}
        self.process = _launch(
            "serve",
            command,
            env,
            self.root,
            self.log_path,
            lambda: self._serving() and (not self.http or _listening(self.http_port)),
        )
        return self

    def _serving(self) -> bool:
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def api_key(self) -> str:
        """The dev project's key, written by whichever process first met the empty database."""
        return (self.data_dir / "dev-api-key").read_text().strip()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _launch(
    name: str,
    command: list[str],
    env: dict[str, str],
    root: Path,
    log_path: Path,
    ready: Callable[[], bool],
) -> subprocess.Popen[bytes]:
    """Start ``command`` (``name`` in errors) in ``root``, its output appended to
    ``log_path``; return once ``ready()`` (raise with the log if it exits first or is not
    ready in time)."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_text = log_path.read_text(errors="replace")
            raise RuntimeError(f"{name} exited {process.returncode}:\n{log_text}")
        if ready():
            return process
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError(f"{name} was not ready:\n{log_path.read_text(errors='replace')}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serving(
    data_dir: Path, env: dict[str, str], *, http: bool = False, root: Path = ROOT
) -> Iterator[Serve]:
    """A started `imagegen serve` (of the checkout ``root``), stopped on exit."""
    server = Serve(data_dir, env, http=http, root=root).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Gateway:
    """One `imagegen gateway` process: the REST gateway alone, in front of ``target``."""

    target: str
    data_dir: Path  # the server's: the gateway reads its shared token there
    http_port: int = field(default_factory=free_port)
    root: Path = ROOT
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"gateway-{self.http_port}.log"

    def start(self) -> Gateway:
        """Start it and wait until it accepts connections."""
        command = [sys.executable, "-m", "server", "gateway", "--target", self.target]
        command += ["--http-port", str(self.http_port)]
        env = {
            **os.environ,
            "IMAGEGEN_LOG_LEVEL": "warning",
            "IMAGEGEN_DATA_DIR": str(self.data_dir),
        }
        self.process = _launch(
            "gateway", command, env, self.root, self.log_path, lambda: _listening(self.http_port)
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextmanager
def gateway(server: Serve) -> Iterator[Gateway]:
    """A started `imagegen gateway` (of the same checkout) in front of ``server``."""
    started = Gateway(server.address, server.data_dir, root=server.root).start()
    try:
        yield started
    finally:
        started.stop()


@dataclass(frozen=True)
class Echo:
    """A running bare echo server: where it listens and its process id (to measure it)."""

    address: str
    pid: int


@contextmanager
def echo_server(
    reply: bytes | None = None,
    *,
    fanout: bool = False,
    options: Sequence[tuple[str, int]] = (),
    launcher: Sequence[str] = (),
    env: dict[str, str] | None = None,
    postgres: str | None = None,
) -> Iterator[Echo]:
    """A bare grpc.aio echo server in its own process (with ``fanout``, its streaming
    fan-out too; ``options``: grpc core options to set, as the server under test does;
    ``launcher``: put before the script, like Serve's; ``env``: added to this one's;
    ``postgres``: a database URL it asks ``SELECT 1`` before each echo)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="imagegen-echo-") as tmp:
        command = [sys.executable, *launcher, str(ROOT / "bench" / "echo_server.py")]
        command += ["--port", str(port)]
        if reply is not None:
            reply_file = Path(tmp) / "reply.bin"
            reply_file.write_bytes(reply)
            command += ["--reply-file", str(reply_file)]
        if fanout:
            command.append("--fanout")
        if postgres:
            command += ["--postgres", postgres]
        for name, value in options:
            command += ["--option", f"{name}={value}"]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, env={**os.environ, **(env or {})}
        )
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"echo server exited {process.wait()}")
            yield Echo(f"127.0.0.1:{port}", process.pid)
        finally:
            _stop(process)


@contextmanager
def echo_process(reply: bytes | None = None) -> Iterator[str]:
    """A bare grpc.aio echo server in its own process; yields its address."""
    with echo_server(reply) as echo:
        yield echo.address


@dataclass(frozen=True)
class Backend:
    """Where a server keeps its rows and objects: a label and the IMAGEGEN_* variables."""

    label: str
    env: dict[str, str]


BACKENDS = ("sqlite", "postgres")


@contextmanager
def backends(names: tuple[str, ...]) -> Iterator[dict[str, Backend]]:
    """The named backends, started (PostgreSQL and SeaweedFS only when asked), stopped on exit.

    Each Backend's variables name a fresh database and bucket; call ``fresh`` for another.
    """
    with ExitStack() as stack:
        started: dict[str, Backend] = {}
        for name in names:
            if name == "sqlite":
                # Explicit, so IMAGEGEN_* variables of the caller's shell cannot point a
                # benchmark labelled SQLite at PostgreSQL or S3.
                started[name] = Backend(
                    "SQLite + local directory",
                    {"IMAGEGEN_DATABASE_URL": "", "IMAGEGEN_S3_ENDPOINT": ""},
                )
            elif name == "postgres":
                from postgres import start_postgres
                from seaweed import start_seaweedfs

                pg = start_postgres()
                s3 = start_seaweedfs(scratch_dir("imagegen-bench-s3-"))
                stack.callback(s3.stop)
                started[name] = PostgresBackend(
                    "PostgreSQL + S3",
                    {
                        "IMAGEGEN_S3_ENDPOINT": s3.endpoint,
                        "IMAGEGEN_S3_ACCESS_KEY": s3.access_key,
                        "IMAGEGEN_S3_SECRET_KEY": s3.secret_key,
                    },
                    pg,
                )
            else:
                raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
        yield started


@dataclass(frozen=True)
class PostgresBackend(Backend):
    """PostgreSQL + S3: every ``fresh`` call names a new database and bucket."""

    server: object = None

    def fresh(self) -> dict[str, str]:
        url = asyncio.run(self.server.create_database())  # type: ignore[attr-defined]
        return {
            **self.env,
            "IMAGEGEN_DATABASE_URL": url,
            "IMAGEGEN_S3_BUCKET": "bench-" + uuid.uuid4().hex[:12],
        }


# Puts at once into a new bucket before a benchmark's server uses it (see warm_bucket).
WARM_PUTS = 64


def warm_bucket(env: dict[str, str]) -> None:
    """Write, then delete, WARM_PUTS objects at once into the bucket ``env`` names.

    SeaweedFS holds the first concurrent writes into a new bucket for about a second
    while it grows the bucket's volumes (seen in 5 of 7 fresh buckets: the first 2-5 of
    256 concurrent puts took 1.01 s, none of the 1,280 puts after them more than 0.55 s;
    no TCP retransmission; after this warm-up, in none of 5). A deployment's bucket paid
    that long ago; a benchmark on a new one would count it in whichever generations
    stored first.
    """
    from concurrent.futures import ThreadPoolExecutor

    from minio import Minio

    client = Minio(
        env["IMAGEGEN_S3_ENDPOINT"],
        access_key=env["IMAGEGEN_S3_ACCESS_KEY"],
        secret_key=env["IMAGEGEN_S3_SECRET_KEY"],
        secure=False,
    )
    bucket = env["IMAGEGEN_S3_BUCKET"]
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    keys = [f"bench-warm/{n}" for n in range(WARM_PUTS)]
    with ThreadPoolExecutor(WARM_PUTS) as pool:
        list(pool.map(lambda key: client.put_object(bucket, key, io.BytesIO(b"x"), 1), keys))
        list(pool.map(lambda key: client.remove_object(bucket, key), keys))


def fresh_env(backend: Backend) -> dict[str, str]:
    """The variables of a new, empty store on ``backend`` (SQLite: the data directory is new)."""
    return backend.fresh() if isinstance(backend, PostgresBackend) else dict(backend.env)
