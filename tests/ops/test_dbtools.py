"""``chatd db backup|check|stats`` and ``chatd user del``'s clean-up."""

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

from chatd.ops import admin
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.serverproc import ROOT

NOW_MS = 1_764_064_800_000


def populate(path: str) -> None:
    """Three users, a room with history from two of them, DMs waiting both ways."""
    connection = schema.open_database_file(path)
    with schema.transaction(connection):
        for name in ("alice", "bob", "carol"):
            transactions.create_user(connection, name, "hash", NOW_MS)
        room_id, _, _ = transactions.open_room(connection, "#lobby", NOW_MS, 50)
        transactions.add_room_message(connection, room_id, "alice", "hi from alice", NOW_MS)
        transactions.add_room_message(connection, room_id, "Bob", "hi from bob", NOW_MS + 1)
        transactions.store_direct_message(connection, "bob", "alice", "to bob", NOW_MS + 2)
        transactions.store_direct_message(connection, "carol", "bob", "from bob", NOW_MS + 3)
        transactions.store_direct_message(connection, "carol", "alice", "from alice", NOW_MS + 4)
    connection.close()


def rows(path: str, query: str) -> list[tuple]:
    """Run a query on a fresh connection."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_stats_prints_counts_time_spans_and_sizes(run):
    """Every table's rows, banned users, message times, and the file's size."""
    populate(run.path)
    code, out, _ = run("db", "stats")
    assert code == 0
    lines = out.splitlines()
    assert f"database: {run.path}" in lines
    assert f"schema version: {schema.SCHEMA_VERSION} (this chatd: {schema.SCHEMA_VERSION})" \
        in lines
    assert any(line.startswith("users: 3 (0 banned)") for line in lines)
    assert any(line.startswith("room messages: 2, 2025-11-25T10:00:00.000Z to "
                               "2025-11-25T10:00:00.001Z") for line in lines)
    assert any(line.startswith("stored messages: 3, ") for line in lines)
    assert any(line.startswith("file: ") and "KiB" in line for line in lines)


def test_check_passes_a_good_database_and_fails_a_damaged_one(run, tmp_path):
    """``db check`` exits 0 on a sound file, 1 naming the problem on a damaged one."""
    populate(run.path)
    assert run("db", "check") == (0, f"{run.path}: ok\n", "")
    # Overwrite the middle of the file (past the header page) with garbage.
    with open(run.path, "r+b") as damaged:
        damaged.seek(4096 * 2)
        damaged.write(b"\xde\xad\xbe\xef" * 2048)
    code, _, err = run("db", "check")
    assert code == 1 and "has problems" in err


def test_db_commands_never_create_or_migrate_a_database(run, tmp_path):
    """A missing file is an error, not a new empty database; an old schema is left as is."""
    code, _, err = run("db", "stats")
    assert code == 1 and "there is no database" in err
    assert not (tmp_path / "chatd.sqlite3").exists()
    old = sqlite3.connect(run.path)
    old.executescript(schema.MIGRATIONS[0] + "PRAGMA user_version = 1;")
    old.close()
    assert run("db", "check")[0] == 0
    assert rows(run.path, "PRAGMA user_version") == [(1,)]


def test_backup_is_a_private_self_contained_checked_copy(run, tmp_path):
    """The copy has everything, no WAL of its own, mode 0600, and replaces an old copy."""
    populate(run.path)
    target = tmp_path / "backups" / "chatd-backup.sqlite3"
    target.parent.mkdir()
    target.write_text("an older backup")
    code, out, _ = run("db", "backup", str(target))
    assert code == 0 and out.startswith(f"backed up {run.path} to {target}: ")
    assert (target.stat().st_mode & 0o777) == 0o600
    assert rows(str(target), "PRAGMA journal_mode") == [("delete",)]
    assert rows(str(target), "SELECT count(*) FROM stored_messages") == [(3,)]
    assert not list(target.parent.glob("*.partial"))
    assert run("--db", str(target), "db", "check")[0] == 0


def test_user_del_removes_what_only_they_needed_and_keeps_the_rest(run):
    """DMs waiting for bob go; what bob sent (history, a DM waiting for carol) stays."""
    populate(run.path)
    assert run("user", "del", "bob") == (0, "deleted bob\n", "")
    assert rows(run.path, "SELECT sender, text FROM stored_messages ORDER BY id") == [
        ("bob", "from bob"), ("alice", "from alice")
    ]
    assert rows(run.path, "SELECT sender FROM room_messages ORDER BY id") == [("alice",), ("Bob",)]


def test_user_del_erase_messages_removes_what_they_sent_too(run, monkeypatch):
    """--erase-messages: bob's history lines and his waiting DMs go, in small windows."""
    monkeypatch.setattr(admin, "ERASE_WINDOW", 2)
    populate(run.path)
    code, out, _ = run("user", "del", "BOB", "--erase-messages")
    assert (code, out) == (0, "deleted BOB and 2 messages they sent\n")
    assert rows(run.path, "SELECT sender, text FROM stored_messages ORDER BY id") == [
        ("alice", "from alice")
    ]
    assert rows(run.path, "SELECT sender FROM room_messages") == [("alice",)]
    assert rows(
        run.path, "SELECT name_key, action FROM account_events WHERE action != 'create' ORDER BY id"
    ) == [("bob", "delete"), ("bob", "erase")]


def test_an_erased_user_vanishes_from_a_live_servers_memory_too(harness):
    """The server drops an erased user's lines from the history it replays on join."""
    harness.chat.startService()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    bob.send("something regrettable")
    alice.send("something fine")
    bob.close()
    with schema.transaction(harness.database.connection):
        transactions.record_account_event(harness.database.connection, "bob", "erase", 0)
    harness.clock.advance(1)
    carol = harness.client()
    history = [line for line in carol.login("carol") if line.startswith("HISTORY")]
    assert [line.split(" ", 3)[3] for line in history] == ["alice something fine"]
    harness.chat.stopService()


def test_backup_of_a_live_busy_server_opens_and_passes_the_check(chatd_server, tmp_path):
    """Clients write as fast as they can while ``chatd db backup`` copies the database.

    The copy is sound, and holds every message acknowledged before the backup
    began and no more than were sent by the time it ended.
    """
    stop, warmed = threading.Event(), threading.Barrier(4)
    acknowledged, sent = [0, 0, 0], [0, 0, 0]
    errors: list[BaseException] = []

    def chatter(index: int) -> None:
        try:
            client = chatd_server.connect()
            client.login(f"writer{index}")
            while not stop.is_set():
                sent[index] += 1
                assert client.command(f"line {sent[index]}")[-1] == "OK say #lobby"
                acknowledged[index] += 1
                if acknowledged[index] == 50:
                    warmed.wait(60)
            client.close()
        except BaseException as error:  # reported by the test thread below
            errors.append(error)
            warmed.abort()

    threads = [threading.Thread(target=chatter, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    warmed.wait(60)
    acknowledged_before = sum(acknowledged)
    target = tmp_path / "live-backup.sqlite3"
    backed_up = subprocess.run(
        [sys.executable, "-m", "chatd", "--db", str(chatd_server.db_path), "db", "backup",
         str(target)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    sent_after, acknowledged_after = sum(sent), sum(acknowledged)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert backed_up.returncode == 0, backed_up.stderr
    assert acknowledged_after > acknowledged_before  # chat went on while the copy was made
    checked = subprocess.run(
        [sys.executable, "-m", "chatd", "--db", str(target), "db", "check"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert checked.returncode == 0, checked.stderr
    [(copied,)] = rows(str(target), "SELECT count(*) FROM room_messages")
    assert acknowledged_before <= copied <= sent_after


def test_backup_script_keeps_a_dated_copy_and_drops_old_ones(tmp_path):
    """scripts/chatd-backup (run by the systemd timer): a new checked copy, old ones pruned."""
    database = tmp_path / "chatd.sqlite3"
    populate(str(database))
    backups = tmp_path / "backups"
    backups.mkdir()
    old, recent = backups / "chatd-20200101T000000Z.sqlite3", backups / "chatd-recent.sqlite3"
    for copy, days_old in ((old, 30), (recent, 2)):
        copy.write_text("an earlier copy")
        stamp = time.time() - days_old * 86400
        os.utime(copy, (stamp, stamp))
    finished = subprocess.run(
        [str(ROOT / "scripts" / "chatd-backup")],
        capture_output=True, text=True, timeout=120,
        env={
            "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CHATD_DB": str(database),
            "BACKUP_DIR": str(backups), "KEEP_DAYS": "14", "CHATD": f"{sys.executable} -m chatd",
        },
    )
    assert finished.returncode == 0, finished.stderr
    kept = sorted(path.name for path in backups.iterdir())
    assert old.name not in kept and recent.name in kept
    [new] = [name for name in kept if re.fullmatch(r"chatd-\d{8}T\d{6}Z\.sqlite3", name)]
    assert rows(str(backups / new), "SELECT count(*) FROM users") == [(3,)]
