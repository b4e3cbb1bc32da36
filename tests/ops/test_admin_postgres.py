"""The admin command line on PostgreSQL (``--db postgresql://...``), and ``chatd db copy``.

Each test gets a fresh database on the session's private PostgreSQL
(``tests/services.py``).
"""

import pytest

from chatd.ops import admin
from chatd.storage import transactions
from chatd.storage.postgres import copy
from chatd.storage.postgres import schema as postgres_schema
from chatd.storage.sqlite import schema
from tests.programs import require_module


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh, empty database."""
    require_module("psycopg", "psycopg[binary]")
    return postgres_server.fresh_database("admin")


@pytest.fixture
def pg_run(pg_url, monkeypatch, capsys):
    """Run ``chatd --db <url> ...`` in-process; return (exit code, stdout, stderr)."""
    import io

    monkeypatch.setenv("CHATD_BCRYPT_ROUNDS", "4")

    def run_admin(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = admin.main(["--db", pg_url, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run_admin.url = pg_url
    return run_admin


def test_user_room_and_db_commands_on_postgresql(pg_run):
    """init, user add/list/ban/del, room op/topic/list, db stats/check; backup points to pg_dump."""
    code, _, err = pg_run("user", "list")
    assert code == 1 and "not a chatd database" in err and "chatd db init" in err
    assert pg_run("db", "init")[1].startswith("created chatd's tables in postgresql://")
    assert pg_run("db", "init")[1].endswith(
        f"is already at schema version {postgres_schema.SCHEMA_VERSION}\n"
    )
    for name in ("Alice", "bob"):
        assert pg_run("user", "add", name, "--password-stdin", stdin="password1\n")[0] == 0
    code, _, err = pg_run("user", "add", "ALICE", "--password-stdin", stdin="password1\n")
    assert code == 1 and "taken" in err
    assert pg_run("user", "ban", "bob") == (0, "banned bob\n", "")
    assert pg_run("user", "list") == (0, "Alice\nbob  (banned)\n", "")
    connection = postgres_schema.connect(pg_run.url)
    with postgres_schema.transaction(connection):
        transactions.join_room(connection, "#rust", "alice", 1)
        transactions.join_room(connection, "#rust", "bob", 2)
    connection.close()
    assert pg_run("room", "op", "#rust", "bob") == (
        0, "bob is now an operator of #rust\n", ""
    )
    assert pg_run("room", "topic", "#rust", "crabs")[0] == 0
    code, out, _ = pg_run("room", "list")
    assert code == 0 and "#rust" in out and "crabs" in out
    assert pg_run("user", "del", "bob")[1].startswith("deleted bob")
    code, out, _ = pg_run("db", "stats")
    assert code == 0 and "users: 1 (0 banned)" in out and "room members: 1" in out
    assert pg_run("db", "check")[1].endswith(": ok\n")
    code, _, err = pg_run("db", "backup", "/tmp/never-written")
    assert code == 1 and "pg_dump" in err


def test_an_unreachable_postgresql_is_one_line_and_status_1(monkeypatch, capsys):
    """No server at the URL: one line naming it (password hidden), exit 1."""
    require_module("psycopg", "psycopg[binary]")
    from tests.services import free_port

    url = f"postgresql://chatd:secret@127.0.0.1:{free_port()}/chatd"
    assert admin.main(["--db", url, "user", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chatd: postgresql://chatd:***@127.0.0.1:") and "secret" not in err
    assert len(err.strip().splitlines()) == 1


def make_single_node(path: str) -> None:
    """A SQLite installation with something in every table."""
    connection = schema.open_database_file(path)
    with schema.transaction(connection):
        for name in ("alice", "bob", "carol"):
            transactions.create_user(connection, name, "hash-" + name, 1)
        transactions.set_banned(connection, "carol", True, 2)
        transactions.join_room(connection, "#zeta", "bob", 3)
        transactions.arrive(connection, "bob", 4)
        transactions.arrive(connection, "alice", 4)
        room_id, _, _ = transactions.open_room(connection, "#zeta", 5, 50)
        transactions.set_private(connection, room_id, True)
        transactions.set_operator(connection, room_id, "bob", True)
        transactions.invite_user(connection, room_id, "alice", "bob", 6, False)
        transactions.ban_user(connection, room_id, "carol", "bob", 7)
        lobby_id, _, _ = transactions.open_room(connection, "#lobby", 5, 50)
        for number in range(25):
            transactions.add_room_message(connection, lobby_id, "alice", f"m{number}", 10 + number)
        transactions.add_room_message(connection, room_id, "bob", "private", 40)
        transactions.store_direct_message(connection, "carol", "alice", "psst", 50)
        transactions.store_direct_message(
            connection, "carol", "bob", "mind the gap", 55, None, None, "notice"
        )
        transactions.record_direct_message(
            connection, "alice", "bob", "hi", 60, "id", ("alice", "bob")
        )
        transactions.set_topic_open(connection, room_id, True)
        transactions.set_secret(connection, room_id, True)
        transactions.set_topic(connection, room_id, "plans", "bob", 1_764_000_000_123)
    connection.close()


def test_db_copy_moves_a_single_node_installation_verified_by_counts(pg_run, tmp_path):
    """Every table copied with equal counts, ids and order kept; the sequences go on after
    the copied ids; a second copy into the now full database is refused."""
    path = str(tmp_path / "chatd.sqlite3")
    make_single_node(path)
    code, out, err = pg_run("db", "copy", path, pg_run.url)
    assert code == 0, err
    assert "rows (equal on both sides): users 3, rooms 2, room_messages 26" in out
    source = schema.open_database_file(path)
    target = postgres_schema.connect(pg_run.url)
    assert copy.table_counts(target) == copy.table_counts(source)
    assert all(copy.table_counts(source).values())
    lobby = transactions.load_room(target, "#lobby", 0, 50)
    assert lobby.recent == transactions.load_room(source, "#lobby", 0, 50).recent
    assert transactions.account_events_since(target, 0) == transactions.account_events_since(
        source, 0
    )
    assert transactions.find_account(target, "carol") == transactions.find_account(
        source, "carol"
    )
    with postgres_schema.transaction(target):
        arrival = transactions.arrive(target, "bob", 100)
        assert transactions.add_room_message(target, lobby.id, "bob", "after", 100) == 26
        assert transactions.create_user(target, "dave", "hash", 100) == 4
    assert [name for name, _ in arrival.rooms] == ["#lobby", "#zeta"]
    assert transactions.room_bans(target, arrival.rooms[1][1].id) == [("carol", "bob", 7)]
    # The flags SQLite keeps as 0/1 arrive as PostgreSQL's booleans, secret among them.
    zeta = arrival.rooms[1][1]
    assert (zeta.private, zeta.topic_open, zeta.secret) == (True, True, True)
    # A stored notice stays one.
    kept = transactions.stored_messages_page(target, "carol", 0, 10)
    assert kept == transactions.stored_messages_page(source, "carol", 0, 10)
    assert [row.kind for row in kept] == ["say", "notice"]
    # The topic with its setter and the time it was set.
    assert (zeta.topic, zeta.topic_setter, zeta.topic_at) == ("plans", "bob", 1_764_000_000_123)
    source.close()
    target.close()
    code, _, err = pg_run("db", "copy", path, pg_run.url)
    assert code == 1 and "not empty" in err
