"""Private database servers for tests: PostgreSQL and Redis on free loopback ports.

Each fixture starts its own server in a temporary directory, on a port no
one else uses, listening on 127.0.0.1 only, and stops it afterwards. Where
the program is missing the test is skipped, naming the Debian package (a
failure under ``CHATD_TEST_REQUIRE_ALL=1``, which CI sets).

PostgreSQL refuses to run as root: as root the server runs as the
``postgres`` system user (``runuser``), in a directory that user owns.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.programs import require_program


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bin(program: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's versioned directory."""
    found = shutil.which(program) if program != "postgres" else None
    versioned = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    if versioned:
        return versioned[-1]
    if found:
        return found
    return require_program(program, "postgresql")


@dataclass
class PostgresServer:
    """A running private PostgreSQL: where it is and how to reach it."""

    directory: Path
    port: int
    user: str
    # How the fixture ran pg_ctl: ``stop`` and ``start`` use the same.
    pg_ctl: str = ""
    options: str = ""

    def stop(self) -> None:
        """Stop the server (fast: sessions are cut), as an outage would."""
        subprocess.run(
            _as_server_user([self.pg_ctl, "-D", str(self.directory / "data"), "-m", "fast",
                             "-w", "stop"]),
            check=True, capture_output=True,
        )

    def start(self) -> None:
        """Start the server again on the same port and data; return once it accepts."""
        subprocess.run(
            _as_server_user([self.pg_ctl, "-D", str(self.directory / "data"), "-o", self.options,
                             "-l", str(self.directory / "log"), "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` (trust authentication on loopback)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create an empty database (or a copy of ``template``, which nobody may be
        connected to); return its URL."""
        import psycopg

        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def fresh_database(self, prefix: str = "chatd") -> str:
        """Create an empty database with a name no other test uses; return its URL."""
        global _databases_made
        _databases_made += 1
        return self.create_database(f"{prefix}_{os.getpid()}_{_databases_made}")


_databases_made = 0


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return [require_program("runuser", "util-linux"), "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL for the whole test session (fsync off: tests need no durability)."""
    initdb = _postgres_bin("initdb")
    pg_ctl = _postgres_bin("pg_ctl")
    directory = Path(tempfile.mkdtemp(prefix="chatd-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    port = free_port()
    user = "chatd"
    subprocess.run(
        _as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8"]),
        check=True, capture_output=True,
    )
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off"
    )
    subprocess.run(
        _as_server_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"),
                         "-w", "-t", "60", "start"]),
        check=True, capture_output=True,
    )
    try:
        yield PostgresServer(directory, port, user, pg_ctl, options)
    finally:
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class RedisServer:
    """A running private redis-server."""

    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(directory: Path, port: int | None = None) -> RedisServer:
    """Start redis-server on 127.0.0.1 (``port`` or a free one); return once it answers."""
    program = require_program("redis-server", "redis-server")
    port = port or free_port()
    process = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in process.stdout:
        if "Ready to accept connections" in line:
            break
    else:
        raise AssertionError(f"redis-server exited ({process.wait()}) before it was ready")
    # The rest of its output is not read: keep the pipe from filling.
    threading_drain(process)
    return RedisServer(port, process)


def threading_drain(process: subprocess.Popen) -> None:
    """Read and drop a process's remaining output on a thread of its own."""
    import threading

    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server for one test."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.process.kill()
        server.process.wait()
