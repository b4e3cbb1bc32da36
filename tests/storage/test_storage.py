"""Storage: the schema, its migrations, the named transactions, and the threads."""

import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.core.errors import ChatError
from chatd.core.ids import COUNTER_LIMIT, LEGACY_NODE, MessageIds, format_message_id
from chatd.storage import backends, rows, transactions
from chatd.storage.sqlite import database as sqlite_database
from chatd.storage.sqlite import schema
from chatd.storage.sqlite.database import Database
from tests.programs import require_module

# Every test taking ``connection`` or ``database`` runs on both backends; the
# PostgreSQL runs use the session's private server (skipped, naming the
# Debian package postgresql, where it is not installed).
BACKENDS = ["sqlite", "postgres"]


def postgres_url(request) -> str:
    """A fresh, empty database on the test session's private PostgreSQL."""
    require_module("psycopg", "psycopg[binary]")
    return request.getfixturevalue("postgres_server").fresh_database("storage")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The backend a test runs on."""
    return request.param


@pytest.fixture
def db_setting(backend, request, tmp_path) -> str:
    """``CHATD_DB`` for a new, empty database of the backend."""
    if backend == "postgres":
        return postgres_url(request)
    return str(tmp_path / "chatd.sqlite3")


def open_migrated(setting: str):
    """A connection to the database ``setting`` names, migrated (as the admin tools open it)."""
    if backends.is_postgres_url(setting):
        from chatd.storage.postgres import schema as postgres_schema

        return postgres_schema.open_database(setting)
    return schema.open_database_file(setting)


def integrity_errors() -> tuple[type[Exception], ...]:
    """What either backend raises for a broken constraint."""
    found: list[type[Exception]] = [sqlite3.IntegrityError]
    try:
        import psycopg
    except ImportError:
        return tuple(found)
    return (*found, psycopg.IntegrityError)


@pytest.fixture
def connection(db_setting):
    """A migrated database of the backend."""
    opened = open_migrated(db_setting)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_connection(tmp_path):
    """A migrated SQLite database file, for what only SQLite has (PRAGMAs, the WAL)."""
    opened = schema.open_database_file(str(tmp_path / "chatd.sqlite3"))
    yield opened
    opened.close()


def test_a_new_file_gets_the_whole_schema(tmp_path):
    """Migrating an empty file reports version 0 and leaves the current version."""
    connection = schema.connect(str(tmp_path / "new.sqlite3"))
    assert schema.migrate(connection) == 0
    assert connection.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert schema.migrate(connection) == schema.SCHEMA_VERSION


def test_room_messages_have_an_index_for_each_way_they_are_read_and_no_other(
    sqlite_connection,
):
    """By room and seq (history, CHATHISTORY, a room's deletion) and by time (retention):
    every insert updates each index, so one that no query uses is only a cost."""
    indexes = {
        name for (name,) in sqlite_connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'room_messages'"
            " AND sql IS NOT NULL"
        )
    }
    assert indexes == {"room_messages_by_seq", "room_messages_by_time"}


def storage_legacy_msgid(sent_at: int, row_id: int) -> str:
    """The id migration 6 gives a message stored before ids existed: node 0000."""
    return format_message_id(sent_at, LEGACY_NODE, row_id & (COUNTER_LIMIT - 1))


def test_an_old_schema_with_data_is_upgraded_in_place(tmp_path):
    """A version-1 database full of data migrates to the current version, keeping every row."""
    path = str(tmp_path / "old.sqlite3")
    old = schema.connect(path)
    # Version 1 as the real first migration step made it, then data written by that chatd.
    with schema.transaction(old):
        for statement in schema.MIGRATIONS[0].split(";"):
            if statement.strip():
                old.execute(statement)
        old.execute("PRAGMA user_version = 1")
        for key, name, password_hash, created_at in (
            ("alice", "Alice", "hash-a", 1), ("bob", "bob", "hash-b", 2)
        ):
            # As version 1 wrote it (no incarnation, no create event).
            old.execute(
                "INSERT INTO users (name_key, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (key, name, password_hash, created_at),
            )
        old.execute("INSERT INTO rooms (name_key, name, created_at) VALUES ('#lobby', '#Lobby', 3)")
        (room_id,) = old.execute("SELECT id FROM rooms WHERE name_key = '#lobby'").fetchone()
        # As version 1 wrote it: room_messages had no kind column yet.
        old.execute(
            "INSERT INTO room_messages (room_id, sender, text, sent_at) VALUES (?, ?, ?, ?)",
            (room_id, "Alice", "before the upgrade", 4),
        )
        # As version 1 wrote it: stored_messages had no msgid column yet.
        old.execute(
            "INSERT INTO stored_messages (recipient_id, sender, text, sent_at)"
            " SELECT id, 'Alice', 'kept for bob', 5 FROM users WHERE name_key = 'bob'"
        )
        transactions.record_account_event(old, "bob", "kick", 6)
    old.close()

    upgraded = schema.connect(path)
    assert schema.migrate(upgraded) == 1
    assert transactions.find_account(upgraded, "alice").incarnation == 0
    assert upgraded.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert transactions.list_users(upgraded) == [("Alice", False), ("bob", False)]
    assert transactions.find_account(upgraded, "alice") == rows.Account("Alice", "hash-a", False)
    assert transactions.open_room(upgraded, "#lobby", 7, 50)[:2] == (room_id, "#Lobby")
    [line] = transactions.recent_room_messages(upgraded, room_id, 50)
    assert (line.sender, line.text, line.sent_at) == ("Alice", "before the upgrade", 4)
    assert (line.seq, line.msgid) == (1, storage_legacy_msgid(4, line.id))
    [event] = transactions.account_events_since(upgraded, 0)
    assert (event.name_key, event.action) == ("bob", "kick")
    [stored] = transactions.stored_messages_page(upgraded, "bob", 0, 50)
    assert (stored.sender, stored.text) == ("Alice", "kept for bob")
    assert stored.msgid == storage_legacy_msgid(5, stored.id)
    indexes = {row[0] for row in upgraded.execute("SELECT name FROM sqlite_master")}
    assert {"room_messages_by_time", "stored_messages_by_time"} <= indexes
    upgraded.close()


def test_wal_and_busy_timeout(sqlite_connection):
    """Every connection uses WAL and waits for locks instead of failing at once."""
    connection = sqlite_connection
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == schema.BUSY_TIMEOUT_MS


def test_a_newer_schema_is_refused(tmp_path):
    """A database from a newer chatd is not touched."""
    connection = schema.connect(str(tmp_path / "future.sqlite3"))
    connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        schema.migrate(connection)


def test_user_names_are_unique_in_any_case(connection):
    """create_user refuses a name taken in another case."""
    with backends.transaction(connection):
        transactions.create_user(connection, "Alice", "hash", 0)
    with pytest.raises(ChatError) as raised, backends.transaction(connection):
        transactions.create_user(connection, "ALICE", "hash", 0)
    assert raised.value.code == "user-exists"
    assert transactions.find_account(connection, "alice") == rows.Account("Alice", "hash", False)


def test_sql_is_parameterised(connection):
    """Names with quotes are data, never SQL."""
    evil = "x'); DROP TABLE users; --"
    with backends.transaction(connection):
        transactions.create_user(connection, evil, "hash", 0)
    assert transactions.find_account(connection, evil.lower()).name == evil
    assert transactions.list_users(connection) == [(evil, False)]


def test_stored_messages_are_read_in_pages_and_deleted_only_when_asked(connection):
    """stored_messages_page reads oldest first after a cursor; only delete removes."""
    with backends.transaction(connection):
        transactions.create_user(connection, "bob", "hash", 0)
        assert transactions.store_direct_message(connection, "bob", "alice", "one", 1) == "bob"
        transactions.store_direct_message(connection, "bob", "carol", "two", 2)
        transactions.store_direct_message(connection, "bob", "dave", "three", 3)
    first = transactions.stored_messages_page(connection, "bob", 0, 2)
    assert [(m.sender, m.text) for m in first] == [("alice", "one"), ("carol", "two")]
    rest = transactions.stored_messages_page(connection, "bob", first[-1].id, 2)
    assert [m.text for m in rest] == ["three"]
    assert transactions.stored_messages_page(connection, "bob", 0, 50) == first + rest
    with backends.transaction(connection):
        assert transactions.delete_stored_messages(connection, [m.id for m in first]) == 2
    assert transactions.stored_messages_page(connection, "bob", 0, 50) == rest
    assert transactions.count_stored_messages(connection, "bob") == 1


def test_each_stored_message_of_a_user_has_a_timestamp_of_its_own(connection):
    """Three in the same millisecond, one from an earlier clock: strictly ascending times."""
    with backends.transaction(connection):
        transactions.create_user(connection, "bob", "hash", 0)
        transactions.create_user(connection, "carol", "hash", 0)
        for text in ("one", "one", "one"):
            transactions.store_direct_message(connection, "bob", "alice", text, 5000)
        transactions.store_direct_message(connection, "bob", "alice", "clock went back", 4000)
        transactions.store_direct_message(connection, "bob", "alice", "later", 9000)
        transactions.store_direct_message(connection, "carol", "alice", "other user", 5000)
    times = [m.sent_at for m in transactions.stored_messages_page(connection, "bob", 0, 50)]
    assert times == [5000, 5001, 5002, 5003, 9000]
    page = transactions.stored_messages_page(connection, "carol", 0, 50)
    assert [m.sent_at for m in page] == [5000]


def test_the_mailbox_limit_is_counted_in_the_storing_transaction(connection):
    """With a limit of 3: the third message is kept, the fourth is mailbox-full."""
    with backends.transaction(connection):
        transactions.create_user(connection, "bob", "hash", 0)
        for number in range(3):
            transactions.store_direct_message(connection, "bob", "alice", f"m{number}", number, 3)
    with pytest.raises(ChatError) as raised, backends.transaction(connection):
        transactions.store_direct_message(connection, "bob", "alice", "one too many", 9, 3)
    assert raised.value.code == "mailbox-full"
    assert transactions.count_stored_messages(connection, "bob") == 3
    # No limit given: the admin tools and old callers are not limited.
    with backends.transaction(connection):
        transactions.store_direct_message(connection, "bob", "alice", "unlimited", 10)
    assert transactions.count_stored_messages(connection, "bob") == 4


def test_room_history_is_read_in_pages_between_its_bounds(connection):
    """room_history_bounds finds the last n seqs; room_messages_between pages through them."""
    with backends.transaction(connection):
        room_id, _, _ = transactions.open_room(connection, "#r", 0, 50)
        other_id, _, _ = transactions.open_room(connection, "#other", 0, 50)
        for number in range(10):
            transactions.add_room_message(connection, room_id, "alice", f"m{number}", number)
            transactions.add_room_message(connection, other_id, "bob", "elsewhere", number)
    assert transactions.room_history_bounds(connection, other_id + 1, 5) is None
    first_id, last_id = transactions.room_history_bounds(connection, room_id, 4)
    page = transactions.room_messages_between(connection, room_id, first_id, last_id, 3)
    assert [row.text for row in page] == ["m6", "m7", "m8"]
    page = transactions.room_messages_between(connection, room_id, page[-1].seq + 1, last_id, 3)
    assert [row.text for row in page] == ["m9"]
    first_id, last_id = transactions.room_history_bounds(connection, room_id, 500)
    everything = transactions.room_messages_between(connection, room_id, first_id, last_id, 500)
    assert [row.text for row in everything] == [f"m{n}" for n in range(10)]


def test_storing_for_nobody_is_no_such_user(connection):
    """A direct message for an unknown account is refused."""
    with pytest.raises(ChatError) as raised:
        transactions.store_direct_message(connection, "ghost", "alice", "boo", 0)
    assert raised.value.code == "no-such-user"


def test_deleting_a_user_deletes_what_waits_for_them(connection):
    """Stored messages go with their recipient; the deletion is an account event."""
    with backends.transaction(connection):
        transactions.create_user(connection, "bob", "hash", 0)
        transactions.store_direct_message(connection, "bob", "alice", "one", 1)
        assert transactions.delete_user(connection, "bob", 5)
        assert not transactions.delete_user(connection, "bob", 5)
    assert connection.execute("SELECT count(*) FROM stored_messages").fetchone()[0] == 0
    events = transactions.account_events_since(connection, 0)
    assert [(e.name_key, e.action) for e in events] == [("bob", "create"), ("bob", "delete")]


def test_room_history_is_a_range_read(connection):
    """open_room creates once, keeps the first spelling; history is the last n, in order."""
    with backends.transaction(connection):
        room_id, name, recent = transactions.open_room(connection, "#Rust", 0, 50)
        assert (name, recent) == ("#Rust", [])
        for number in range(10):
            transactions.add_room_message(connection, room_id, "alice", f"m{number}", number)
        again_id, again_name, recent = transactions.open_room(connection, "#RUST", 0, 3)
    assert (again_id, again_name) == (room_id, "#Rust")
    assert [row.text for row in recent] == ["m7", "m8", "m9"]
    if not isinstance(connection, sqlite3.Connection):
        return  # PostgreSQL plans by its statistics: an empty table is read whole
    # recent_room_messages' query: the room's last rows of one index, not a sort.
    plan = str(connection.execute(
        "EXPLAIN QUERY PLAN SELECT seq FROM room_messages"
        " WHERE room_id = ? ORDER BY seq DESC LIMIT ?",
        (room_id, 3),
    ).fetchall())
    assert "room_messages_by_seq" in plan and "TEMP B-TREE" not in plan


# --- the threaded Database --------------------------------------------------------


@pytest.fixture
def database(db_setting):
    """A running Database of the backend (SQLite's or PostgreSQL's), closed after the test."""
    from twisted.internet import reactor

    db = backends.make_database(db_setting, reactor)
    yield db
    pytest_twisted.blockon(db.close())


@pytest.fixture
def sqlite_db(tmp_path):
    """A running SQLite Database on a file, for what only SQLite has (the WAL)."""
    from twisted.internet import reactor

    db = Database(str(tmp_path / "chatd.sqlite3"), reactor)
    yield db
    pytest_twisted.blockon(db.close())


@pytest_twisted.inlineCallbacks
def test_a_write_has_been_committed_when_its_deferred_fires(database, db_setting):
    """Another connection sees the row as soon as write() fires: it is committed."""
    yield database.open()
    yield database.write(transactions.create_user, "alice", "hash", 0)
    other = open_migrated(db_setting)
    assert other.execute("SELECT name FROM users").fetchall() == [("alice",)]
    other.close()


@pytest_twisted.inlineCallbacks
def test_one_failing_write_does_not_undo_its_batch(database):
    """Writes queued together share a commit, but each succeeds or fails alone."""
    yield database.open()
    results = yield defer.DeferredList(
        [
            database.write(transactions.create_user, "alice", "hash", 0),
            database.write(transactions.create_user, "ALICE", "hash", 0),
            database.write(transactions.create_user, "bob", "hash", 0),
        ],
        consumeErrors=True,
    )
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].value.code == "user-exists"
    users = yield database.read(transactions.list_users)
    assert users == [("alice", False), ("bob", False)]


@pytest_twisted.inlineCallbacks
def test_a_failing_write_keeps_nothing_and_the_rest_of_its_batch_commits(database):
    """A write that fails after writing keeps none of it; the writes around it commit.

    Both writers run a batch without savepoints first: the failure rolls it
    back and it runs again with a savepoint per write.
    """

    def half_then_fail(connection):
        transactions.create_user(connection, "ghost", "hash", 0)
        raise ChatError("forbidden", "changed its mind")

    yield database.open()
    results = yield defer.DeferredList(
        [
            database.write(transactions.create_user, "alice", "hash", 0),
            database.write(half_then_fail),
            database.write(transactions.create_user, "bob", "hash", 0),
        ],
        consumeErrors=True,
    )
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].value.code == "forbidden"
    users = yield database.read(transactions.list_users)
    assert users == [("alice", False), ("bob", False)]
    events = yield database.read(transactions.account_events_since, 0)
    assert [event.name_key for event in events] == ["alice", "bob"]


@pytest_twisted.inlineCallbacks
def test_many_writes_are_grouped_into_few_commits(database):
    """Writes queued while the writer is busy are committed together, all in order."""
    yield database.open()
    room_id, _, _ = yield database.write(transactions.open_room, "#a", 0, 50)
    ids = yield defer.gatherResults(
        [
            database.write(transactions.add_room_message, room_id, "a", str(n), n)
            for n in range(2000)
        ]
    )
    assert ids == sorted(ids)
    assert database.batches_committed < 2000
    rows = yield database.read(transactions.recent_room_messages, room_id, 2000)
    assert [row.text for row in rows] == [str(n) for n in range(2000)]


@pytest_twisted.inlineCallbacks
def test_close_finishes_queued_writes(db_setting):
    """Writes queued before close() are committed before the connection closes."""
    from twisted.internet import reactor

    database = backends.make_database(db_setting, reactor)
    yield database.open()
    writes = [database.write(transactions.create_user, f"u{n}", "hash", 0) for n in range(50)]
    yield database.close()
    yield defer.gatherResults(writes)
    check = open_migrated(db_setting)
    assert check.execute("SELECT count(*) FROM users").fetchone()[0] == 50
    check.close()


@pytest_twisted.inlineCallbacks
def test_database_work_runs_off_the_reactor_thread(database):
    """Neither reads nor writes run on the reactor's thread."""
    import threading

    yield database.open()
    main = threading.get_ident()
    write_thread = yield database.write(lambda connection: threading.get_ident())
    read_thread = yield database.read(lambda connection: threading.get_ident())
    assert main not in (write_thread, read_thread)


@defer.inlineCallbacks
def fill_wal(database, path, messages: int):
    """Open ``database``, commit ``messages`` room messages of a kilobyte each.

    Fires with the size the database file had before them.
    """
    yield database.open()
    room_id, _name, _rows = yield database.write(transactions.open_room, "#big", 0, 50)
    size_before = path.stat().st_size
    yield defer.gatherResults(
        [database.write(transactions.add_room_message, room_id, "alice", "x" * 1000, n)
         for n in range(messages)]
    )
    return size_before


@pytest_twisted.inlineCallbacks
def test_commits_never_checkpoint_the_wal(sqlite_db, tmp_path, monkeypatch):
    """Past SQLite's 1000-page auto-checkpoint the WAL keeps growing: no commit syncs the disk."""
    monkeypatch.setattr(sqlite_database, "CHECKPOINT_SECONDS", 3600.0)
    path = tmp_path / "chatd.sqlite3"
    main_size = yield fill_wal(sqlite_db, path, 6000)
    wal = tmp_path / "chatd.sqlite3-wal"
    assert wal.stat().st_size > 1000 * 4096 * 1.25
    assert path.stat().st_size == main_size


@pytest_twisted.inlineCallbacks
def test_the_checkpointer_copies_the_wal_back(sqlite_db, tmp_path, monkeypatch):
    """The checkpointer thread moves committed pages into the database file on its own."""
    from twisted.internet import reactor, task

    monkeypatch.setattr(sqlite_database, "CHECKPOINT_SECONDS", 0.01)
    path = tmp_path / "chatd.sqlite3"
    main_size = yield fill_wal(sqlite_db, path, 2000)
    for _attempt in range(1000):  # At most ten seconds.
        if path.stat().st_size > main_size + 2000 * 1000:
            break
        yield task.deferLater(reactor, 0.01, lambda: None)
    assert path.stat().st_size > main_size + 2000 * 1000


def _version_5_database(path: str) -> sqlite3.Connection:
    """A database at schema version 5, before message ids and sequences."""
    old = schema.connect(path)
    with schema.transaction(old):
        for migration in schema.MIGRATIONS[:5]:
            for statement in migration.split(";"):
                if statement.strip():
                    old.execute(statement)
        old.execute("PRAGMA user_version = 5")
    return old


def test_migration_6_numbers_old_messages_per_room_and_gives_them_ids(tmp_path):
    """Messages stored before ids existed get gap-free per-room seqs in row order and ids.

    Two rooms' messages interleaved by row id: each room counts 1, 2, 3 on
    its own, ``rooms.last_seq`` is each room's count, and the next message
    of a room takes the number after it.
    """
    path = str(tmp_path / "v5.sqlite3")
    old = _version_5_database(path)
    with schema.transaction(old):
        transactions.create_user(old, "bob", "hash-b", 1)
        for key in ("#a", "#b", "#empty"):
            old.execute(
                "INSERT INTO rooms (name_key, name, created_at) VALUES (?, ?, 0)", (key, key)
            )
        ids = dict(old.execute("SELECT name_key, id FROM rooms"))
        for number in range(3):
            for key in ("#a", "#b"):
                old.execute(
                    "INSERT INTO room_messages (room_id, sender, text, sent_at, kind)"
                    " VALUES (?, 'x', ?, ?, 'say')",
                    (ids[key], f"{key}{number}", 100 + number),
                )
        old.execute(
            "INSERT INTO stored_messages (recipient_id, sender, text, sent_at)"
            " SELECT id, 'x', 'psst', 7 FROM users"
        )
    old.close()

    upgraded = schema.connect(path)
    assert schema.migrate(upgraded) == 5
    for key in ("#a", "#b"):
        rows = transactions.recent_room_messages(upgraded, ids[key], 50)
        assert [(row.seq, row.text) for row in rows] == [(n + 1, f"{key}{n}") for n in range(3)]
        assert [row.msgid for row in rows] == [
            storage_legacy_msgid(row.sent_at, row.id) for row in rows
        ]
    last_seqs = dict(upgraded.execute("SELECT name_key, last_seq FROM rooms"))
    assert last_seqs == {"#a": 3, "#b": 3, "#empty": 0}
    [stored] = transactions.stored_messages_page(upgraded, "bob", 0, 50)
    assert stored.msgid == storage_legacy_msgid(7, stored.id)
    with schema.transaction(upgraded):
        assert transactions.add_room_message(upgraded, ids["#b"], "x", "new", 200) == 4
        assert transactions.add_room_message(upgraded, ids["#empty"], "x", "first", 200) == 1
    upgraded.close()


def test_room_sequences_are_gap_free_per_room_and_a_rollback_gives_the_number_back(connection):
    """Each room numbers its messages 1, 2, 3...; a message rolled back uses no number.

    The number is taken in the inserting transaction, so the next committed
    message of the room takes the one the rolled-back message had.
    """
    with backends.transaction(connection):
        room_id, _, _ = transactions.open_room(connection, "#r", 0, 50)
        other_id, _, _ = transactions.open_room(connection, "#other", 0, 50)
        assert transactions.add_room_message(connection, room_id, "a", "one", 1, msgid="m1") == 1
        assert transactions.add_room_message(connection, other_id, "a", "elsewhere", 1) == 1
        assert transactions.add_room_message(connection, room_id, "a", "two", 2, msgid="m2") == 2

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon), backends.transaction(connection):
        assert transactions.add_room_message(connection, room_id, "a", "lost", 3) == 3
        raise Abandon()
    with backends.transaction(connection):
        assert transactions.add_room_message(connection, room_id, "a", "three", 4, msgid="m3") == 3
    rows = transactions.recent_room_messages(connection, room_id, 50)
    assert [(row.seq, row.msgid, row.text) for row in rows] == [
        (1, "m1", "one"),
        (2, "m2", "two"),
        (3, "m3", "three"),
    ]
    with pytest.raises(integrity_errors()), backends.transaction(connection):
        connection.execute(
            "INSERT INTO room_messages (room_id, sender, text, sent_at, seq)"
            " VALUES (?, 'a', 'b', 5, 2)",
            (room_id,),
        )


def test_history_is_ordered_by_seq_not_by_row(connection):
    """History reads a room in sequence order, whatever order the rows were written in."""
    with backends.transaction(connection):
        room_id, _, _ = transactions.open_room(connection, "#r", 0, 50)
        for seq, text in ((2, "second"), (1, "first"), (3, "third")):
            connection.execute(
                "INSERT INTO room_messages (room_id, sender, text, sent_at, seq, msgid)"
                " VALUES (?, 'a', ?, 0, ?, ?)",
                (room_id, text, seq, f"id{seq}"),
            )
    assert [row.text for row in transactions.recent_room_messages(connection, room_id, 2)] == [
        "second",
        "third",
    ]
    low, high = transactions.room_history_bounds(connection, room_id, 50)
    page = transactions.room_messages_between(connection, room_id, low, high, 50)
    assert [row.text for row in page] == ["first", "second", "third"]


def test_stored_direct_messages_keep_their_id(connection):
    """A stored DM keeps the id the core gave it; one stored without gets the legacy form."""
    with backends.transaction(connection):
        transactions.create_user(connection, "bob", "hash", 0)
        transactions.store_direct_message(connection, "bob", "alice", "one", 1, msgid="core-id")
        transactions.store_direct_message(connection, "bob", "alice", "two", 2)
    first, second = transactions.stored_messages_page(connection, "bob", 0, 50)
    assert first.msgid == "core-id"
    assert second.msgid == storage_legacy_msgid(2, second.id)


def test_message_ids_are_time_ordered_unique_and_compact():
    """Ids sort in the order made: within a millisecond, past its counter, clock stepping back."""
    ids = MessageIds(node=0x1234)
    made = [ids.next(1000), ids.next(1000), ids.next(1001), ids.next(999), ids.next(1001)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(len(one) == 20 and int(one, 16) >= 0 for one in made)
    assert made[0] == "000000003e8" + "1234" + "00000"
    # Past the counter's range within one millisecond: on into the next, still in order.
    burst = MessageIds(node=1)
    many = [burst.next(5) for _ in range(COUNTER_LIMIT + 2)]
    assert many == sorted(many) and len(set(many)) == len(many)
    assert many[-1].startswith(f"{6:011x}")
    # Two processes' nodes differ (random, never the migration's 0000).
    assert MessageIds().node != LEGACY_NODE


# --- every named transaction, on both backends ------------------------------------


def test_rooms_memberships_bans_and_invites(connection):
    """join/arrive/invite/ban/op/kick/whois/rooms: the same answers from both backends.

    Rooms come back in the order joined (SQLite's rowid, PostgreSQL's
    ``room_members.rowid`` identity), #lobby first, whatever the names.
    """
    with backends.transaction(connection):
        for name in ("alice", "bob", "carol"):
            transactions.create_user(connection, name, "hash", 0)
        assert transactions.join_room(connection, "#zeta", "alice", 1) == "#zeta"
        assert transactions.join_room(connection, "#Alpha", "alice", 1) == "#Alpha"
        arrival = transactions.arrive(connection, "alice", 2)
    assert [name for name, _ in arrival.rooms] == ["#lobby", "#zeta", "#Alpha"]
    alpha = dict(arrival.rooms)["#Alpha"]
    assert (alpha.private, alpha.operators) == (False, ("alice",))
    with backends.transaction(connection):
        transactions.set_private(connection, alpha.id, True)
        with pytest.raises(ChatError) as refused:
            transactions.join_room(connection, "#alpha", "bob", 3)
        assert refused.value.code == "forbidden"
        transactions.invite_user(connection, alpha.id, "bob", "alice", 3, False)
        transactions.invite_user(connection, alpha.id, "bob", "carol", 4, False)  # replaces
        arrival = transactions.arrive(connection, "bob", 5)
        assert arrival.invites == [("#Alpha", "carol")]
        assert transactions.join_room(connection, "#alpha", "bob", 6) == "#Alpha"
        name, operators = transactions.set_operator(connection, alpha.id, "bob", True)
        assert (name, operators) == ("bob", ("alice", "bob"))
        assert transactions.remove_member(connection, alpha.id, "bob") == ("bob", True)
        banned = transactions.ban_user(connection, alpha.id, "carol", "alice", 7)
        transactions.ban_user(connection, alpha.id, "carol", "alice", 8)  # once is enough
        transactions.set_topic(connection, alpha.id, "letters", "alice", 5)
        transactions.set_away(connection, "alice", "lunch")
    assert banned == rows.Banned("carol", False, False)
    assert transactions.room_bans(connection, alpha.id) == [("carol", "alice", 7)]
    assert transactions.visible_rooms(connection, "bob") == [("#lobby", 2), ("#zeta", 1)]
    assert transactions.visible_rooms(connection, "alice") == [
        ("#Alpha", 1), ("#lobby", 2), ("#zeta", 1)
    ]
    assert transactions.is_member(connection, "#alpha", "alice")
    assert not transactions.is_member(connection, "#alpha", "bob")
    whois = transactions.whois(connection, "alice", "bob")
    assert (whois.name, whois.away, whois.last_seen, whois.shared_rooms) == (
        "alice", "lunch", 2, ["#lobby"]
    )
    [alpha_listing, lobby, zeta] = transactions.list_rooms(connection)
    assert alpha_listing == rows.RoomListing("#Alpha", 1, True, ("alice",), "letters")
    assert (lobby.name, lobby.members, zeta.name) == ("#lobby", 2, "#zeta")
    with backends.transaction(connection):
        done = transactions.admin_room_change(connection, "unban", "#alpha", "carol", "", 9)
        assert done == "lifted the ban of carol from #Alpha"
        transactions.admin_room_change(connection, "op", "#zeta", "alice", "", 9)
        assert transactions.leave_room(connection, alpha.id, "alice")
    assert transactions.room_bans(connection, alpha.id) == []
    events = transactions.account_events_since(connection, 0)
    assert [(e.action, e.room_key) for e in events][-2:] == [
        ("room-unban", "#alpha"), ("room-op", "#zeta")
    ]


def test_accounts_retention_erasure_and_statistics(connection):
    """Account changes, purges by age, erasing a sender, and the stats, on both backends."""
    with backends.transaction(connection):
        alice_id = transactions.create_user(connection, "alice", "old", 0)
        transactions.create_user(connection, "bob", "hash", 0)
        with pytest.raises(ChatError) as look_alike:
            transactions.create_user(connection, "aIice", "hash", 0)
        assert look_alike.value.code == "user-exists"
        account = transactions.find_account(connection, "alice")
        assert account.id == alice_id and account.incarnation > 0
        assert transactions.upgrade_password_hash(connection, alice_id, "old", "new")
        assert not transactions.upgrade_password_hash(connection, alice_id, "old", "newer")
        assert transactions.set_banned(connection, "bob", True, 1)
        room_id, _, _ = transactions.open_room(connection, "#r", 0, 50)
        for number in range(5):
            transactions.post_room_message(
                connection, room_id, "alice", f"m{number}", 100 * number,
                account=(account.id, account.incarnation),
            )
            transactions.add_room_message(connection, room_id, "Bob", f"b{number}", 100 * number)
            transactions.post_direct_message(connection, "alice", "bob", "dm", 100 * number)
    assert transactions.list_users(connection) == [("alice", False), ("bob", True)]
    assert transactions.find_account(connection, "alice").password_hash == "new"
    first, last = transactions.message_id_range(connection)
    with backends.transaction(connection):
        assert transactions.purge_room_messages(connection, 200, 3) == 3
        assert transactions.purge_room_messages(connection, 200, 3) == 1
        assert transactions.purge_stored_messages(connection, 100, 10) == 1
        assert transactions.erase_messages_from(connection, "bob", first, last) == 7
        assert transactions.purge_account_events(connection, 10**12, 100) == 2
    history = transactions.recent_room_messages(connection, room_id, 50)
    assert [row.text for row in history] == ["m2", "m3", "m4"]
    assert [row.seq for row in history] == [5, 7, 9]
    assert transactions.last_account_event_id(connection) == 3  # the newest stays
    stats = transactions.database_stats(connection)
    assert stats.schema_version == transactions.schema_version(connection) > 0
    assert stats.banned_users == 1
    assert stats.tables["room_messages"].rows == 3
    assert (stats.tables["room_messages"].oldest, stats.tables["room_messages"].newest) == (
        200, 400
    )
    assert stats.tables["stored_messages"].rows == 0  # bob's, all erased
    assert stats.page_size > 0 and stats.pages > 0



def test_a_post_checks_numbers_and_inserts_at_once_and_leaves_no_gap_when_refused(connection):
    """A session's message (bound account, core's msgid) and a guest's: numbered in turn;
    a stale identity or a guest name now an account is refused with nothing written,
    so the next message takes the very next number. On both backends."""
    with backends.transaction(connection):
        alice_id = transactions.create_user(connection, "alice", "hash", 0)
        alice = transactions.find_account(connection, "alice")
        room_id, _, _ = transactions.open_room(connection, "#r", 0, 50)
        identity = (alice_id, alice.incarnation)
        first = transactions.post_room_message(
            connection, room_id, "alice", "one", 10, account=identity, msgid="a" * 20
        )
        with pytest.raises(ChatError) as stale:
            transactions.post_room_message(
                connection, room_id, "alice", "lost", 11,
                account=(alice_id, alice.incarnation + 1), msgid="b" * 20,
            )
        assert stale.value.code == "forbidden"
        guest = transactions.post_guest_message(
            connection, room_id, "Visitor", "hi", 12, msgid="c" * 20
        )
        with pytest.raises(ChatError) as taken:
            transactions.post_guest_message(
                connection, room_id, "ALICE", "me?", 13, msgid="d" * 20
            )
        assert taken.value.code == "forbidden"
        second = transactions.post_room_message(
            connection, room_id, "alice", "two", 14, account=identity, msgid="e" * 20,
            kind="action",
        )
    assert (first, guest, second) == (1, 2, 3)
    history = transactions.recent_room_messages(connection, room_id, 50)
    rows_seen = [
        (row.seq, row.sender, row.text, row.sent_at, row.kind, row.msgid) for row in history
    ]
    assert rows_seen == [
        (1, "alice", "one", 10, "say", "a" * 20),
        (2, "Visitor", "hi", 12, "say", "c" * 20),
        (3, "alice", "two", 14, "action", "e" * 20),
    ]

def test_a_run_of_posts_is_numbered_in_order_per_room_and_refuses_only_the_stale_ones(
    connection,
):
    """``post_room_messages`` (the writer's form for a run of posts): each room numbered
    in the posts' order, a stale identity and a deleted account refused with the error
    one post gets and nothing written for them, the rest as one by one. Both backends."""
    with backends.transaction(connection):
        identities = {}
        for name in ("alice", "bob", "carol"):
            user_id = transactions.create_user(connection, name, "hash", 0)
            identities[name] = (user_id, transactions.find_account(connection, name).incarnation)
        first, _, _ = transactions.open_room(connection, "#one", 0, 50)
        second, _, _ = transactions.open_room(connection, "#two", 0, 50)
        transactions.delete_user(connection, "carol", 1)
        stale = (identities["bob"][0], identities["bob"][1] + 1)
        posts = [
            (first, "alice", "a1", 10, "say", identities["alice"], "m1" * 10),
            (second, "Bob", "b1", 11, "action", identities["bob"], "m2" * 10),
            (first, "bob", "lost", 12, "say", stale, "m3" * 10),
            (first, "carol", "gone", 13, "say", identities["carol"], "m4" * 10),
            (first, "BOB", "b2", 14, "say", identities["bob"], "m5" * 10),
            (second, "alice", "a2", 15, "say", identities["alice"], "m6" * 10),
        ]
        results = transactions.post_room_messages(connection, posts)
    assert results[:2] == [1, 1]
    assert [(error.code, error.text) for error in results[2:4]] == [
        ("forbidden", "your account has been deleted")
    ] * 2
    assert results[4:] == [2, 2]
    seen = {
        room: [
            (row.seq, row.sender, row.text, row.sent_at, row.kind, row.msgid)
            for row in transactions.recent_room_messages(connection, room, 50)
        ]
        for room in (first, second)
    }
    assert seen == {
        first: [(1, "alice", "a1", 10, "say", "m1" * 10), (2, "BOB", "b2", 14, "say", "m5" * 10)],
        second: [
            (1, "Bob", "b1", 11, "action", "m2" * 10),
            (2, "alice", "a2", 15, "say", "m6" * 10),
        ],
    }


AWKWARD_TEXTS = ("a,b", "{x}", '"quoted"', "back\\slash", "NULL", "", " lead and trail ",
                 "ünïcode 😀", "(1, 2)", "semi;colon", "it's")


def test_a_run_of_posts_keeps_every_text_exactly(connection):
    """A run's rows go in together (on PostgreSQL as one array per column): texts with
    the characters arrays quote, and a run longer than any statement cache, come back
    as they went in. Both backends."""
    with backends.transaction(connection):
        user_id = transactions.create_user(connection, "alice", "hash", 0)
        account = (user_id, transactions.find_account(connection, "alice").incarnation)
        room, _, _ = transactions.open_room(connection, "#one", 0, 50)
        texts = [AWKWARD_TEXTS[index % len(AWKWARD_TEXTS)] for index in range(300)]
        posts = [(room, "alice", text, 10 + index, "say", account, f"m{index:019d}")
                 for index, text in enumerate(texts)]
        results = transactions.post_room_messages(connection, posts)
    assert results == list(range(1, 301))
    rows = transactions.recent_room_messages(connection, room, 300)
    assert [(row.seq, row.text, row.sent_at, row.msgid) for row in rows] == [
        (index + 1, text, 10 + index, f"m{index:019d}") for index, text in enumerate(texts)]


def test_a_run_of_posts_without_accounts_is_run_one_by_one(sqlite_connection):
    """Posts of sessions bound to no account (no checked login) take the one-by-one
    path inside the run: numbered in order, an unknown sender refused as alone."""
    with backends.transaction(sqlite_connection):
        transactions.create_user(sqlite_connection, "alice", "hash", 0)
        room, _, _ = transactions.open_room(sqlite_connection, "#r", 0, 50)
        results = transactions.post_room_messages(sqlite_connection, [
            (room, "alice", "one", 1, "say", None, "m1" * 10),
            (room, "nobody", "lost", 2, "say", None, "m2" * 10),
            (room, "alice", "two", 3, "say", None, "m3" * 10),
        ])
    assert (results[0], results[2]) == (1, 2)
    assert results[1].code == "forbidden"


class RecordingConnection:
    """A SQLite connection that notes which rooms' rows ``UPDATE rooms`` takes, in order."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.rooms_updated: list[int] = []

    def execute(self, sql, parameters=()):
        if sql.startswith("UPDATE rooms"):
            self.rooms_updated.append(parameters[-1])
        return self.connection.execute(sql, parameters)

    def executemany(self, sql, rows):
        return self.connection.executemany(sql, rows)


def test_a_run_numbers_its_rooms_in_the_order_of_their_ids(sqlite_connection):
    """Whatever the order of the posts, a run takes its rooms' rows in the order of their
    ids, so two nodes' runs over the same rooms cannot deadlock on them."""
    with backends.transaction(sqlite_connection):
        user_id = transactions.create_user(sqlite_connection, "alice", "hash", 0)
        account = (user_id, transactions.find_account(sqlite_connection, "alice").incarnation)
        first, _, _ = transactions.open_room(sqlite_connection, "#one", 0, 50)
        second, _, _ = transactions.open_room(sqlite_connection, "#two", 0, 50)
        recording = RecordingConnection(sqlite_connection)
        results = transactions.post_room_messages(recording, [
            (room, "alice", text, 1, "say", account, text * 10)
            for room, text in ((second, "b1"), (first, "a1"), (second, "b2"))
        ])
    assert recording.rooms_updated == [first, second]
    assert results == [1, 1, 2]


def held_writer(database):
    """Hold ``database``'s writer in a write of its own until the returned event is set,
    so that the writes queued meanwhile reach it as one batch."""
    import threading

    started, release = threading.Event(), threading.Event()

    def hold(connection):
        started.set()
        release.wait(30)

    holding = database.write(hold)
    assert started.wait(30), "the writer never took the holding write"
    return release, holding


@pytest_twisted.inlineCallbacks
def test_posts_queued_together_commit_as_one_run(database, monkeypatch):
    """Posts that reach the writer in one batch run as one ``post_room_messages`` call,
    and each is answered with its own number, in order. Both backends."""
    runs = []

    def counted(connection, posts):
        runs.append(len(posts))
        return transactions.post_room_messages(connection, posts)

    monkeypatch.setitem(transactions.RUN_TOGETHER, transactions.post_room_message, counted)
    yield database.open()
    user_id = yield database.write(transactions.create_user, "alice", "hash", 0)
    account = yield database.read(transactions.find_account, "alice")
    room_id, _, _ = yield database.write(transactions.open_room, "#r", 0, 50)
    before = database.batches_committed
    release, holding = held_writer(database)
    posts = [
        database.write(
            transactions.post_room_message, room_id, "alice", f"t{n}", n, "say",
            (user_id, account.incarnation), f"{n:020d}",
        )
        for n in range(50)
    ]
    release.set()
    yield holding
    seqs = yield defer.gatherResults(posts)
    assert seqs == list(range(1, 51))
    assert runs == [50]
    assert database.batches_committed == before + 2
    history = yield database.read(transactions.recent_room_messages, room_id, 100)
    assert [(row.seq, row.text) for row in history] == [(n + 1, f"t{n}") for n in range(50)]


@pytest_twisted.inlineCallbacks
def test_a_post_that_fails_in_a_run_fails_alone(database):
    """A post whose run raises (here: its room is gone) makes the batch run again write by
    write, in savepoints: it fails alone, and the posts around it keep their numbers.
    Both backends."""
    yield database.open()
    user_id = yield database.write(transactions.create_user, "alice", "hash", 0)
    account = yield database.read(transactions.find_account, "alice")
    room_id, _, _ = yield database.write(transactions.open_room, "#r", 0, 50)
    identity = (user_id, account.incarnation)
    release, holding = held_writer(database)
    posts = [
        database.write(
            transactions.post_room_message, room, "alice", text, 1, "say", identity, text * 10
        )
        for room, text in ((room_id, "aa"), (room_id + 99, "bb"), (room_id, "cc"))
    ]
    release.set()
    yield holding
    results = yield defer.DeferredList(posts, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True]
    assert (results[0][1], results[2][1]) == (1, 2)
    history = yield database.read(transactions.recent_room_messages, room_id, 10)
    assert [(row.seq, row.text) for row in history] == [(1, "aa"), (2, "cc")]


# --- PostgreSQL only ------------------------------------------------------------------


@pytest.fixture
def pg_url(request) -> str:
    """A fresh database on the session's private PostgreSQL."""
    return postgres_url(request)


def test_postgresql_gets_the_whole_schema_and_refuses_a_newer_one(pg_url):
    """An empty PostgreSQL database migrates from 0; one from a newer chatd is refused."""
    from chatd.storage.postgres import schema as postgres_schema

    connection = postgres_schema.connect(pg_url)
    assert postgres_schema.migrate(connection) == 0
    assert postgres_schema.schema_version(connection) == postgres_schema.SCHEMA_VERSION
    assert postgres_schema.migrate(connection) == postgres_schema.SCHEMA_VERSION
    tables = {
        name for (name,) in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    assert set(transactions.TABLES) | {"chatd_schema"} == tables
    indexes = {
        name for (name,) in connection.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'room_messages'"
            " AND schemaname = current_schema()"
        )
    }
    assert indexes == {"room_messages_pkey", "room_messages_by_seq", "room_messages_by_time"}
    connection.execute("UPDATE chatd_schema SET version = version + 1")
    with pytest.raises(RuntimeError, match="newer"):
        postgres_schema.migrate(connection)
    connection.close()


@pytest.mark.parametrize("as_sessions", [False, True], ids=["add", "post-as-session"])
@pytest_twisted.inlineCallbacks
def test_two_writers_on_one_postgresql_never_share_a_room_sequence(pg_url, as_sessions):
    """Two Databases (two nodes) posting to one room at once: seqs 1..N, each once,
    in each writer's order. Both ways a message is numbered: ``add_room_message``,
    and the sessions' path (sender check, number and row in one statement).

    ``rooms.last_seq`` is incremented in the inserting transaction, and the
    row lock that UPDATE takes makes the other writer wait for the commit.
    """
    from twisted.internet import reactor

    first = backends.make_database(pg_url, reactor)
    second = backends.make_database(pg_url, reactor)
    yield first.open()
    yield second.open()
    try:
        identities = {}
        for name in ("a", "b"):
            yield first.write(transactions.create_user, name, "hash", 0)
            account = yield first.read(transactions.find_account, name)
            identities[name] = (account.id, account.incarnation)
        room_id, _, _ = yield first.write(transactions.open_room, "#busy", 0, 50)

        def write(database, name: str, n: int):
            if as_sessions:
                return database.write(
                    transactions.post_room_message, room_id, name, f"{name}{n}", n, "say",
                    identities[name], f"{n:016x}{name * 4}",
                )
            return database.write(transactions.add_room_message, room_id, name, f"{name}{n}", n)

        writes = [
            write(database, name, n)
            for n in range(300)
            for database, name in ((first, "a"), (second, "b"))
        ]
        seqs = yield defer.gatherResults(writes)
        history = yield first.read(transactions.recent_room_messages, room_id, 1000)
    finally:
        yield first.close()
        yield second.close()
    assert sorted(seqs) == list(range(1, 601))
    assert [row.seq for row in history] == list(range(1, 601))
    assert [row.text for row in history if row.sender == "a"] == [f"a{n}" for n in range(300)]
    assert [row.text for row in history if row.sender == "b"] == [f"b{n}" for n in range(300)]
