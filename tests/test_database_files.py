"""The database's files under the server: removed, replaced, unwritable, shared, and the WAL.

A server whose database file was removed goes on writing into deleted
files; one whose ``-shm`` became immutable dies of SIGBUS; two servers on
one file split presence; a WAL under saturating writes grows without
bound. Each is reproduced here, mostly against the real twistd.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.core.errors import ChatError
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from chatd.storage.sqlite.database import Database
from chatd.storage.sqlite.lock import DatabaseInUse, lock_database, lock_path
from tests.ops.test_metrics import METRICS_LISTENING, samples, scrape
from tests.programs import require_program
from tests.serverproc import ROOT, ServerProcess, server_environment, twistd_command

UNAVAILABLE = "ERR unavailable "


def start_with_metrics(tmp_path) -> tuple[ServerProcess, int]:
    """The real twistd with a metrics listener; the server and the metrics port."""
    server = ServerProcess(tmp_path, {"CHATD_METRICS_LISTEN": "tcp:0:interface=127.0.0.1"})
    server.start()
    return server, int(server.wait_for(METRICS_LISTENING).group(1))


def admin(db_path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run the real admin command line, ``python -m chatd --db DB ...``, in a process."""
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--db", str(db_path), *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), "CHATD_BCRYPT_ROUNDS": "4"},
        input=stdin, capture_output=True, text=True, timeout=60,
    )


# --- item 4: a database file removed or replaced while running -------------------


def test_a_removed_database_refuses_every_write_and_says_so(tmp_path):
    """``rm chatd.sqlite3*`` while running: writes get ERR unavailable, /healthz 503, a log line.

    Before, the server kept answering ``OK say``, ``OK msg ... stored`` and
    ``OK register`` into deleted files, all of it gone at the next start.
    """
    server, metrics_port = start_with_metrics(tmp_path)
    try:
        alice = server.connect()
        alice.login("alice")
        bob = server.connect()
        bob.login("bob")
        bob.command("/quit")
        assert alice.command("before")[-1] == "OK say #lobby"
        assert scrape(metrics_port, "/healthz") == (200, "ok\n")
        for path in tmp_path.glob("chatd.sqlite3*"):
            if not path.name.endswith(".lock"):
                path.unlink()
        # Noticed without any write: the periodic check logs it.
        server.wait_for(r"database \S+ is unavailable: \S+chatd.sqlite3 was removed")
        assert alice.command("after")[-1].startswith(UNAVAILABLE)
        assert alice.command("/msg bob kept for later?")[-1].startswith(UNAVAILABLE)
        assert alice.command("/join #new")[-1].startswith(UNAVAILABLE)
        carol = server.connect()
        assert carol.command("/register carol password1")[-1].startswith(UNAVAILABLE)
        assert alice.command("/ping still-here") == ["OK ping still-here"]
        status, body = scrape(metrics_port, "/healthz")
        assert status == 503
        assert "database unavailable:" in body and "chatd.sqlite3 was removed" in body
        assert samples(scrape(metrics_port)[1])[("chatd_db_available", frozenset())] == 0
    finally:
        server.stop()


@pytest_twisted.inlineCallbacks
def test_a_replaced_database_file_refuses_writes(tmp_path):
    """Another file renamed over the database: the next write fails, and every one after it."""
    from twisted.internet import reactor

    path = str(tmp_path / "chatd.sqlite3")
    database = Database(path, reactor)
    try:
        yield database.open()
        yield database.write(transactions.create_user, "alice", "hash", 0)
        other = str(tmp_path / "other.sqlite3")
        schema.open_database_file(other).close()
        os.replace(other, path)
        for name in ("bob", "carol"):
            with pytest.raises(ChatError) as refused:
                yield database.write(transactions.create_user, name, "hash", 0)
            assert refused.value.code == "unavailable"
        assert database.unavailable == f"{path} was replaced by another file"
        # Reads still answer, from the file that was opened.
        users = yield database.read(transactions.list_users)
        assert users == [("alice", False)]
    finally:
        yield database.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a file immutable")
def test_an_immutable_shm_refuses_writes_instead_of_dying(tmp_path):
    """``chattr +i chatd.sqlite3-shm``: ERR unavailable and a live server, not a SIGBUS.

    Before, the next write killed the process with SIGBUS and no log line.
    """
    chattr = require_program("chattr", "e2fsprogs")
    server = ServerProcess(tmp_path).start()
    shm = str(server.db_path) + "-shm"
    try:
        alice = server.connect()
        alice.login("alice")
        assert alice.command("before")[-1] == "OK say #lobby"
        subprocess.run([chattr, "+i", shm], check=True)
        try:
            assert alice.command("after")[-1].startswith(UNAVAILABLE)
            assert alice.command("/ping alive") == ["OK ping alive"]
            server.wait_for(r"is unavailable: \S+-shm is not writable")
            # Stopping closes the database: without writing to the -shm either.
            assert server.terminate() in (0, -signal.SIGTERM)  # not -SIGBUS
            assert any("chatd stopped" in line for line in server.wait_for_end_of_output())
        finally:
            subprocess.run([chattr, "-i", shm], check=True)
    finally:
        server.stop()


def test_a_fatal_signal_leaves_a_traceback_in_the_log(tmp_path):
    """A SIGBUS (what an unwritable memory-mapped file causes) is reported, not silent."""
    server = ServerProcess(tmp_path).start()
    try:
        os.kill(server.pid, signal.SIGBUS)
        server.wait_for(r"Fatal Python error: Bus error")
        server.process.wait(30)
        assert server.process.returncode != 0
    finally:
        server.stop()


# --- item 5: one server per database file ----------------------------------------


def test_a_second_server_on_the_same_database_refuses_to_start(tmp_path):
    """Two real twistd on one file: the second exits non-zero naming the first; admin works."""
    first = ServerProcess(tmp_path).start()
    try:
        second = subprocess.run(
            twistd_command(), cwd=tmp_path, env=server_environment(tmp_path),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        assert second.returncode != 0
        message = second.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"chatd: cannot start: CHATD_DB=\S+chatd.sqlite3: in use by another chatd"
            rf" \(pid {first.pid} on \S+, since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\);.*",
            message,
        ), second.stderr
        assert "chatd listening" not in second.stdout + second.stderr
        # The admin command line and backups still work beside the running server.
        added = admin(first.db_path, "user", "add", "carol", "--password-stdin",
                      stdin="password1\n")
        assert added.returncode == 0, added.stderr
        backup = admin(first.db_path, "db", "backup", str(tmp_path / "backup.sqlite3"))
        assert backup.returncode == 0, backup.stderr
        alice = first.connect()
        assert alice.command("/login carol password1")[-1] == "OK login carol"
        alice.close()
        # A crash lets go of the lock: the next server starts.
        first.kill()
        first.start()
    finally:
        first.stop()


def test_the_lock_names_its_holder_and_is_let_go(tmp_path):
    """A held lock refuses a second taker with the holder's pid; released, it can be taken."""
    path = str(tmp_path / "chatd.sqlite3")
    held = lock_database(path, now=0)
    with pytest.raises(DatabaseInUse) as refused:
        lock_database(path)
    assert str(refused.value).startswith(
        f"CHATD_DB {path} is in use by another chatd (pid {os.getpid()} on "
    )
    assert "since 1970-01-01T00:00:00Z" in str(refused.value)
    held.release()
    lock_database(path).release()
    assert os.path.exists(lock_path(path))


def test_a_lock_that_cannot_be_made_names_the_setting(tmp_path):
    """A database in a missing directory: the error names CHATD_DB and the reason."""
    path = str(tmp_path / "missing" / "chatd.sqlite3")
    with pytest.raises(DatabaseInUse, match=r"^CHATD_DB .*: cannot open its lock file .*"):
        lock_database(path)


# --- item 13: the WAL stays bounded ------------------------------------------------

WAL_LIMIT = 1024 * 1024
ROW_BYTES = 16_000
IN_FLIGHT = 64
# Twice the limit and a batch (its rows and their pages, counted twice over):
# past twice the limit the writer empties the log before its next batch.
WAL_BOUND = 2 * WAL_LIMIT + 2 * IN_FLIGHT * ROW_BYTES
# Written whatever the machine's speed; a WAL only ever checkpointed PASSIVE
# beside this writer grows to about all of it (71 MB measured).
LOAD_BYTES = 64 * 1024 * 1024
LOAD_SECONDS = 120.0


@pytest_twisted.inlineCallbacks
def test_the_wal_stays_bounded_under_sustained_writes_and_shrinks_after(tmp_path):
    """Saturating writes of 64 MiB: the WAL never passes twice its limit and a batch, then shrinks.

    Before, PASSIVE checkpoints never caught up with the writer: the log
    grew with every write and kept its size afterwards.
    """
    from twisted.internet import reactor

    path = str(tmp_path / "chatd.sqlite3")
    wal = path + "-wal"
    largest = [0]
    checkpoints: list[tuple[str, int, float]] = []
    quiet: defer.Deferred = defer.Deferred()

    def committed(seconds: float, writes: int) -> None:
        largest[0] = max(largest[0], os.stat(wal).st_size)

    def checkpointed(mode: str, seconds: float, wal_bytes: int) -> None:
        checkpoints.append((mode, wal_bytes, round(seconds, 3)))
        if finished[0] and wal_bytes <= WAL_LIMIT and not quiet.called:
            reactor.callFromThread(lambda: quiet.called or quiet.callback(wal_bytes))

    finished = [False]
    database = Database(
        path, reactor, on_commit=committed, on_checkpoint=checkpointed,
        wal_limit_bytes=WAL_LIMIT, checkpoint_seconds=0.05,
    )
    try:
        yield database.open()
        room_id, _, _ = yield database.write(transactions.open_room, "#load", 0, 1)
        text = "x" * ROW_BYTES
        deadline = reactor.seconds() + LOAD_SECONDS
        written = [0]
        done: defer.Deferred = defer.Deferred()
        running = [0]

        def one_more(_=None) -> None:
            if reactor.seconds() < deadline and written[0] * ROW_BYTES < LOAD_BYTES:
                written[0] += 1
                running[0] += 1
                writing = database.write(transactions.add_room_message, room_id, "a", text, 0)
                writing.addCallback(finished_one)
            elif running[0] == 0 and not done.called:
                done.callback(None)

        def finished_one(_) -> None:
            running[0] -= 1
            one_more()

        for _ in range(IN_FLIGHT):
            one_more()
        yield done
        finished[0] = True
        assert written[0] * ROW_BYTES >= LOAD_BYTES, "the load did not finish in time"
        assert 0 < largest[0] < WAL_BOUND, (largest[0], checkpoints)
        assert "TRUNCATE" in {mode for mode, _, _ in checkpoints}
        after = yield quiet.addTimeout(30, reactor)
        assert os.stat(wal).st_size <= WAL_LIMIT
        assert after <= WAL_LIMIT
        check = sqlite3.connect(path)
        assert check.execute("SELECT count(*) FROM room_messages").fetchone()[0] == written[0]
        check.close()
    finally:
        yield database.close()

