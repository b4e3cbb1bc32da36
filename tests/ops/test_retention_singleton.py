"""Retention in a cluster: one node purges for all, under a PostgreSQL advisory lock.

Two retention services (two nodes) on one database of the session's private
PostgreSQL (tests/services.py), each with its own ``AdvisoryLock``. The lock
questions run on the reactor's threads, so these tests run on the real
reactor; time for the purge ages is a ``task.Clock``. A node that dies is a
real process killed with ``kill -9`` while holding the lock.
"""

import signal
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from chatd.storage import transactions
from chatd.storage.singleton import RETENTION_LOCK, AdvisoryLock, OnlyNode, singleton_lock
from tests.ops.test_retention import NOW_MS, retention
from tests.programs import require_module
from tests.serverproc import ROOT
from tests.support import ChatHarness, InlinePostgresDatabase

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def url(postgres_server) -> str:
    """A fresh database on the private PostgreSQL."""
    require_module("psycopg", "psycopg[binary]")
    return postgres_server.fresh_database("retention")


@pytest.fixture
def clock() -> task.Clock:
    """The purge ages' time."""
    clock = task.Clock()
    clock.advance(NOW_MS / 1000)
    return clock


class Node:
    """One node's retention: its own connection to the database and its own lock."""

    def __init__(self, url: str, clock) -> None:
        self.database = InlinePostgresDatabase(url)
        self.chat = ChatHarness(database=self.database).chat
        self.forgotten: list[int] = []
        self.chat.forget_history_before = self.forgotten.append
        self.lock = AdvisoryLock(url, reactor, RETENTION_LOCK, "retention")
        self.retention = retention(self.database, clock, chat=self.chat, room_history_days=30,
                                   stored_message_days=30, lock=self.lock)

    def old_messages(self) -> int:
        """How many room messages older than 30 days are left."""
        before = NOW_MS - 30 * DAY_MS
        row = self.database.connection.execute(
            "SELECT count(*) FROM room_messages WHERE sent_at < ?", (before,)
        ).fetchone()
        return row[0]

    def add_old_message(self) -> None:
        """A room message 31 days old."""
        self.database.write(transactions.open_room, "#lobby", 0, 50)
        self.database.write(
            transactions.add_room_message, 1, "alice", "old", NOW_MS - 31 * DAY_MS
        )

    def close(self) -> None:
        """Release the lock and close the connection (blocking; test teardown)."""
        self.lock.release_now()
        self.database.connection.close()


@pytest.fixture
def nodes(url, clock):
    """Make nodes on the database; closed after the test."""
    made: list[Node] = []

    def make() -> Node:
        node = Node(url, clock)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


@pytest_twisted.ensureDeferred
async def test_one_node_purges_and_the_other_only_forgets(nodes):
    """Both nodes run a round: the first takes the lock and deletes; the second is refused,
    deletes nothing (its writes stay 0) and only drops the purged age from its memory;
    round after round it stays that way."""
    first, second = nodes(), nodes()
    first.add_old_message()
    await first.retention.purge()
    assert first.lock.held and first.old_messages() == 0
    second.add_old_message()
    writes_before = second.database.writes
    for _ in range(2):
        await second.retention.purge()
    assert not second.lock.held
    assert second.database.writes == writes_before
    assert second.old_messages() == 1
    assert second.forgotten == [NOW_MS - 30 * DAY_MS] * 2
    assert second.retention.skipped == 2
    await first.retention.purge()
    assert first.old_messages() == 0 and first.lock.held


@pytest_twisted.ensureDeferred
async def test_a_stopping_node_hands_the_job_over_at_the_next_round(nodes):
    """The holder stops cleanly (its lock released): the other node's next round runs."""
    first, second = nodes(), nodes()
    await first.retention.purge()
    assert first.lock.held
    await first.lock.release()
    second.add_old_message()
    await second.retention.purge()
    assert second.lock.held and second.old_messages() == 0


HOLDER = """
import signal, sys
from chatd.storage.singleton import AdvisoryLock, RETENTION_LOCK
lock = AdvisoryLock(sys.argv[1], None, RETENTION_LOCK, "retention")
print("held" if lock.take_now() else "refused", flush=True)
# Hold the lock until killed (the test kills this process in every case).
signal.pause()
"""


@pytest_twisted.ensureDeferred
async def test_a_node_killed_while_holding_the_lock_is_taken_over(nodes, url):
    """Another process (a node) takes the lock; this node is refused while it lives; after
    ``kill -9`` of that process PostgreSQL frees the lock and this node's next round runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        node = nodes()
        node.add_old_message()
        await node.retention.purge()
        assert not node.lock.held and node.old_messages() == 1
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        # PostgreSQL frees a dead session's lock once it sees the connection closed:
        # bounded, so ask round after round (each round is one question).
        for _ in range(200):
            await node.retention.purge()
            if node.lock.held:
                break
        assert node.lock.held and node.old_messages() == 0
    finally:
        holder.kill()
        holder.wait(30)


def test_one_sqlite_node_always_runs_the_job():
    """On SQLite (one node, the file locked to it) there is nobody to ask."""
    lock = singleton_lock("chatd.sqlite3", reactor, RETENTION_LOCK, "retention")
    assert isinstance(lock, OnlyNode) and lock.held
    assert isinstance(
        singleton_lock("postgresql://chatd@127.0.0.1/chatd", reactor, RETENTION_LOCK, "x"),
        AdvisoryLock,
    )
