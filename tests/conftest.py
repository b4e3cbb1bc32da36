"""Fixtures shared across the test suite."""

import io

import pytest
from hypothesis import settings

from chatd.ops import admin
from tests.services import postgres_server, redis_server  # noqa: F401 (fixtures)
from tests.support import ChatHarness

# Tests never assert timings: hypothesis's per-example deadline (200 ms) would
# fail a correct test on a machine busy with other work.
settings.register_profile("chatd", deadline=None)
settings.load_profile("chatd")


@pytest.fixture
def harness() -> ChatHarness:
    """An in-memory chatd server driven over StringTransport."""
    return ChatHarness()


@pytest.fixture
def chatd_server(tmp_path):
    """The real ``twistd -ny chatd.tac``, started in ``tmp_path``; killed after the test."""
    from tests.serverproc import ServerProcess

    server = ServerProcess(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """Run ``chatd --db <file> ...`` in-process with ``stdin``; return (exit code, stdout, stderr).

    ``run.path`` is the database file, in ``tmp_path``.
    """
    monkeypatch.setenv("CHATD_BCRYPT_ROUNDS", "4")
    path = str(tmp_path / "chatd.sqlite3")

    def run_admin(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = admin.main(["--db", path, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run_admin.path = path
    return run_admin
