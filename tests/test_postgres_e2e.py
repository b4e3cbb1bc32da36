"""End to end on PostgreSQL: the real ``twistd -ny chatd.tac`` with ``CHATD_DB=postgresql://...``.

Each test gets an empty database of its own on the session's private
PostgreSQL (``tests/services.py``; skipped naming the Debian package
``postgresql`` where it is not installed, a failure under
``CHATD_TEST_REQUIRE_ALL=1``).
"""

import pytest

from tests.programs import require_module
from tests.serverproc import ServerProcess
from tests.services import free_port
from tests.test_startup import start_and_wait_for_exit, the_one_failure_line


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database for one test."""
    require_module("psycopg", "psycopg[binary]")
    return postgres_server.fresh_database("e2e")


@pytest.fixture
def pg_chatd(tmp_path, postgres_url):
    """A real twistd on PostgreSQL; killed after the test."""
    server = ServerProcess(tmp_path, env={"CHATD_DB": postgres_url}).start()
    yield server
    server.stop()


def test_chat_dms_and_history_on_postgresql_survive_a_restart(pg_chatd, tmp_path):
    """Two users register and chat in #lobby; a DM is stored, delivered at the next login,
    and history is still there after ``kill -9`` and a restart; no SQLite file appears."""
    alice, bob = pg_chatd.connect(), pg_chatd.connect()
    alice.login("alice")
    bob.login("bob")
    assert alice.read_line() == "JOIN #lobby bob"
    assert bob.command("hi alice") == ["MSG #lobby bob hi alice", "OK say #lobby"]
    assert alice.read_line() == "MSG #lobby bob hi alice"
    bob.close()
    assert alice.read_line() == "PART #lobby bob"
    assert alice.command("remember this")[-1] == "OK say #lobby"
    assert alice.command("/msg bob while you were out")[-1] == "OK msg bob stored"
    pg_chatd.kill()
    pg_chatd.start()
    bob = pg_chatd.connect()
    lines = bob.command("/login bob password1")
    history = [line for line in lines if line.startswith("HISTORY #lobby ")]
    assert [line.split(" ", 3)[3] for line in history] == [
        "bob hi alice", "alice remember this"
    ], lines
    stored = [line for line in lines if line.startswith("STORED ")]
    assert len(stored) == 1 and stored[0].endswith(" alice while you were out"), lines
    assert lines[-1] == "OK login bob"
    again = pg_chatd.connect()
    assert not [line for line in again.command("/login bob password1") if "STORED" in line]
    assert not list(tmp_path.glob("*.sqlite3*"))


def test_writes_get_err_unavailable_while_postgresql_is_down_and_service_resumes(
    pg_chatd, postgres_server
):
    """PostgreSQL stopped under a running server: a message gets ``ERR unavailable`` (never
    OK); once it is back the server reconnects by itself and the next message is kept."""
    alice = pg_chatd.connect()
    alice.login("alice")
    assert alice.command("before")[-1] == "OK say #lobby"
    postgres_server.stop()
    try:
        reply = alice.command("while it is down")
        assert reply[-1].startswith("ERR unavailable "), reply
        pg_chatd.wait_for(r"is unavailable: ")
    finally:
        postgres_server.start()
    pg_chatd.wait_for(r"is reachable again \(writer\)")
    assert alice.command("after")[-1] == "OK say #lobby"
    bob = pg_chatd.connect()
    lines = bob.login("bob")
    history = [line.split(" ", 3)[3] for line in lines if line.startswith("HISTORY #lobby ")]
    assert history == ["alice before", "alice after"], lines


def test_an_unreachable_postgresql_stops_the_server(tmp_path):
    """Nothing listens on the URL's port: exit 1, one line naming CHATD_DB and why."""
    require_module("psycopg", "psycopg[binary]")
    # A password no checkout path holds (the log names the .tac file's path).
    url = f"postgresql://chatd:pw-k7q2zx@127.0.0.1:{free_port()}/chatd"
    status, output = start_and_wait_for_exit(tmp_path, {"CHATD_DB": url})
    assert status == 1, "\n".join(output)
    line = the_one_failure_line(output)
    shown = url.replace(":pw-k7q2zx@", ":***@")
    assert line.startswith(f"CHATD_DB={shown}: cannot connect to PostgreSQL"), line
    assert "pw-k7q2zx" not in "\n".join(output)
    assert not [line for line in output if "listening on" in line]


def test_a_postgresql_url_that_does_not_parse_stops_twistd_before_it_starts(tmp_path):
    """A malformed URL is a setting that does not parse: exit 2, the variable and why."""
    require_module("psycopg", "psycopg[binary]")
    status, output = start_and_wait_for_exit(
        tmp_path, {"CHATD_DB": "postgresql://chatd:secret@127.0.0.1:54x2/chatd"}
    )
    assert status == 2, "\n".join(output)
    line = the_one_failure_line(output)
    assert line == (
        "CHATD_DB='postgresql://chatd:***@127.0.0.1:54x2/chatd':"
        " the port '54x2' is not a number from 1 to 65535"
    )
