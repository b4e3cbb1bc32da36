"""All of chatd's SQL: the schema, its migrations, and named transactions.

Every function taking a ``connection`` first is a transaction body: it runs
inside a transaction that its caller opens and commits (``Database.write``
in the server, ``transaction`` in the admin command line), so the same code
serves both. ``Database`` runs them off the reactor thread: writes on one
writer thread that commits whatever is queued as one batch (each write in a
savepoint of its own, so one failing write does not undo the others), reads
on a reader thread with a connection of its own. WAL lets the reader, the
admin command line and backups read while the writer writes.

A Deferred returned by ``Database.write`` fires only after the batch holding
that write has been committed, which is what lets the server answer ``OK``
only for data that survives ``kill -9``.
"""

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.errors import ChatError

log = Logger()

BUSY_TIMEOUT_MS = 10_000
MAX_BATCH = 512
# How often the checkpointer copies the write-ahead log back into the database.
CHECKPOINT_SECONDS = 1.0

# Each entry moves the schema from its index to the next version; the
# version a database has reached is kept in PRAGMA user_version.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name_key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        banned INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY,
        name_key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE room_messages (
        id INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms (id),
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at INTEGER NOT NULL
    );
    CREATE INDEX room_messages_by_room ON room_messages (room_id, id);
    CREATE TABLE stored_messages (
        id INTEGER PRIMARY KEY,
        recipient_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at INTEGER NOT NULL
    );
    CREATE INDEX stored_messages_by_recipient ON stored_messages (recipient_id, id);
    CREATE TABLE account_events (
        id INTEGER PRIMARY KEY,
        name_key TEXT NOT NULL,
        action TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    """,
    # 2: retention deletes by age, oldest first, a batch at a time.
    """
    CREATE INDEX room_messages_by_time ON room_messages (sent_at);
    CREATE INDEX stored_messages_by_time ON stored_messages (sent_at);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Account:
    """What a login needs to know about an account."""

    name: str
    password_hash: str
    banned: bool


@dataclass(frozen=True)
class StoredRow:
    """A direct message waiting in the store for its recipient."""

    id: int
    sender: str
    text: str
    sent_at: int


@dataclass(frozen=True)
class HistoryRow:
    """A past message of a room."""

    id: int
    sender: str
    text: str
    sent_at: int


@dataclass(frozen=True)
class AccountEvent:
    """An administrative change to an account that live sessions must see."""

    id: int
    name_key: str
    action: str


def connect(path: str) -> sqlite3.Connection:
    """Open ``path`` the way every chatd connection is opened.

    Autocommit mode, so transactions are exactly the ones we begin; WAL so
    readers never wait for the writer; ``synchronous=NORMAL`` because in WAL
    mode a commit is then safe against a process crash (only a power loss can
    take the last commits back), which is the ``kill -9`` promise we make.
    """
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the body as one write transaction: commit on success, else roll back."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION``; return the version found.

    Refuses a database written by a newer chatd rather than guess at it.
    """
    with transaction(connection):
        found = connection.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {found} is newer than this chatd ({SCHEMA_VERSION})"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def open_database_file(path: str) -> sqlite3.Connection:
    """Connect to ``path`` and migrate it: what the admin command line uses."""
    connection = connect(path)
    migrate(connection)
    return connection


# --- accounts --------------------------------------------------------------


def create_user(
    connection: sqlite3.Connection, name: str, password_hash: str, now: int
) -> None:
    """Add an account; raise ``user-exists`` if the name is taken in any case."""
    try:
        connection.execute(
            "INSERT INTO users (name_key, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (name.lower(), name, password_hash, now),
        )
    except sqlite3.IntegrityError:
        raise ChatError("user-exists", f"{name} is taken") from None


def find_account(connection: sqlite3.Connection, name_key: str) -> Account | None:
    """Return the account stored under ``name_key``, or None."""
    row = connection.execute(
        "SELECT name, password_hash, banned FROM users WHERE name_key = ?", (name_key,)
    ).fetchone()
    return None if row is None else Account(row[0], row[1], bool(row[2]))


def user_exists(connection: sqlite3.Connection, name_key: str) -> bool:
    """Tell whether an account is stored under ``name_key``."""
    row = connection.execute("SELECT 1 FROM users WHERE name_key = ?", (name_key,)).fetchone()
    return row is not None


def set_password_hash(connection: sqlite3.Connection, name_key: str, password_hash: str) -> bool:
    """Replace an account's password hash; return False if there is no such account."""
    cursor = connection.execute(
        "UPDATE users SET password_hash = ? WHERE name_key = ?", (password_hash, name_key)
    )
    return cursor.rowcount == 1


def set_banned(connection: sqlite3.Connection, name_key: str, banned: bool, now: int) -> bool:
    """Ban or unban an account; return False if there is no such account."""
    cursor = connection.execute(
        "UPDATE users SET banned = ? WHERE name_key = ?", (int(banned), name_key)
    )
    if cursor.rowcount != 1:
        return False
    record_account_event(connection, name_key, "ban" if banned else "unban", now)
    return True


def delete_user(connection: sqlite3.Connection, name_key: str, now: int) -> bool:
    """Delete an account and the direct messages waiting for it."""
    cursor = connection.execute("DELETE FROM users WHERE name_key = ?", (name_key,))
    if cursor.rowcount != 1:
        return False
    record_account_event(connection, name_key, "delete", now)
    return True


def list_users(connection: sqlite3.Connection) -> list[tuple[str, bool]]:
    """Every account's name and whether it is banned, sorted case-insensitively."""
    rows = connection.execute("SELECT name, banned FROM users ORDER BY name_key")
    return [(name, bool(banned)) for name, banned in rows]


def record_account_event(
    connection: sqlite3.Connection, name_key: str, action: str, now: int
) -> None:
    """Note a change the running server must act on (a ban, a deletion)."""
    connection.execute(
        "INSERT INTO account_events (name_key, action, at) VALUES (?, ?, ?)",
        (name_key, action, now),
    )


def last_account_event_id(connection: sqlite3.Connection) -> int:
    """The id of the newest account event, 0 when there is none."""
    return connection.execute("SELECT coalesce(max(id), 0) FROM account_events").fetchone()[0]


def account_events_since(connection: sqlite3.Connection, after_id: int) -> list[AccountEvent]:
    """Account events newer than ``after_id``, oldest first."""
    rows = connection.execute(
        "SELECT id, name_key, action FROM account_events WHERE id > ? ORDER BY id", (after_id,)
    )
    return [AccountEvent(*row) for row in rows]


# --- rooms and their history -------------------------------------------------


def open_room(
    connection: sqlite3.Connection, name: str, now: int, history_limit: int
) -> tuple[int, str, list[HistoryRow]]:
    """Find or create a room; return its id, display name and recent history."""
    connection.execute(
        "INSERT OR IGNORE INTO rooms (name_key, name, created_at) VALUES (?, ?, ?)",
        (name.lower(), name, now),
    )
    room_id, display_name = connection.execute(
        "SELECT id, name FROM rooms WHERE name_key = ?", (name.lower(),)
    ).fetchone()
    return room_id, display_name, recent_room_messages(connection, room_id, history_limit)


def add_room_message(
    connection: sqlite3.Connection, room_id: int, sender: str, text: str, now: int
) -> int:
    """Append a message to a room's history; return its id."""
    cursor = connection.execute(
        "INSERT INTO room_messages (room_id, sender, text, sent_at) VALUES (?, ?, ?, ?)",
        (room_id, sender, text, now),
    )
    return cursor.lastrowid


def recent_room_messages(
    connection: sqlite3.Connection, room_id: int, limit: int
) -> list[HistoryRow]:
    """The last ``limit`` messages of a room, oldest first: one index range read."""
    rows = connection.execute(
        "SELECT id, sender, text, sent_at FROM room_messages"
        " WHERE room_id = ? ORDER BY id DESC LIMIT ?",
        (room_id, limit),
    ).fetchall()
    return [HistoryRow(*row) for row in reversed(rows)]


def room_history_bounds(
    connection: sqlite3.Connection, room_id: int, count: int
) -> tuple[int, int] | None:
    """The first and last ids of a room's last ``count`` messages, or None if it has none."""
    low, high = connection.execute(
        "SELECT min(id), max(id) FROM"
        " (SELECT id FROM room_messages WHERE room_id = ? ORDER BY id DESC LIMIT ?)",
        (room_id, count),
    ).fetchone()
    return None if low is None else (low, high)


def room_messages_between(
    connection: sqlite3.Connection, room_id: int, first_id: int, last_id: int, limit: int
) -> list[HistoryRow]:
    """Up to ``limit`` messages of a room with ids from ``first_id`` to ``last_id``, in order."""
    rows = connection.execute(
        "SELECT id, sender, text, sent_at FROM room_messages"
        " WHERE room_id = ? AND id BETWEEN ? AND ? ORDER BY id LIMIT ?",
        (room_id, first_id, last_id, limit),
    ).fetchall()
    return [HistoryRow(*row) for row in rows]


# --- direct messages kept for offline users --------------------------------


def store_direct_message(
    connection: sqlite3.Connection,
    recipient_key: str,
    sender: str,
    text: str,
    now: int,
    limit: int | None = None,
) -> str:
    """Keep a direct message for an offline user; return the recipient's display name.

    Raises ``no-such-user`` when there is no such account, and
    ``mailbox-full`` when ``limit`` messages already wait for the user:
    counted inside the committing transaction, so senders in parallel
    cannot together pass the limit.
    """
    row = connection.execute(
        "SELECT id, name FROM users WHERE name_key = ?", (recipient_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-user", f"there is no user {recipient_key}")
    recipient_id, name = row
    if limit is not None:
        (waiting,) = connection.execute(
            "SELECT count(*) FROM (SELECT 1 FROM stored_messages WHERE recipient_id = ? LIMIT ?)",
            (recipient_id, limit),
        ).fetchone()
        if waiting >= limit:
            raise ChatError(
                "mailbox-full",
                f"{limit} messages already wait for {name}; try again once they have logged in",
            )
    connection.execute(
        "INSERT INTO stored_messages (recipient_id, sender, text, sent_at) VALUES (?, ?, ?, ?)",
        (recipient_id, sender, text, now),
    )
    return name


def stored_messages_page(
    connection: sqlite3.Connection, recipient_key: str, after_id: int, limit: int
) -> list[StoredRow]:
    """Up to ``limit`` messages waiting for a user with ids above ``after_id``, oldest first.

    Nothing is removed: a page leaves the store through
    ``delete_stored_messages`` once it was handed over.
    """
    rows = connection.execute(
        "SELECT s.id, s.sender, s.text, s.sent_at FROM stored_messages AS s"
        " JOIN users AS u ON u.id = s.recipient_id"
        " WHERE u.name_key = ? AND s.id > ? ORDER BY s.id LIMIT ?",
        (recipient_key, after_id, limit),
    ).fetchall()
    return [StoredRow(*row) for row in rows]


def delete_stored_messages(connection: sqlite3.Connection, ids: list[int]) -> int:
    """Remove stored messages that were handed over; return how many were still there."""
    return connection.executemany(
        "DELETE FROM stored_messages WHERE id = ?", [(message_id,) for message_id in ids]
    ).rowcount


def count_stored_messages(connection: sqlite3.Connection, recipient_key: str) -> int:
    """How many messages wait for a user."""
    return connection.execute(
        "SELECT count(*) FROM stored_messages AS s JOIN users AS u ON u.id = s.recipient_id"
        " WHERE u.name_key = ?",
        (recipient_key,),
    ).fetchone()[0]


# --- retention, erasure and statistics ----------------------------------------


def purge_room_messages(connection: sqlite3.Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` room messages sent before ``before``, oldest first.

    Returns how many were deleted; fewer than ``limit`` means none are left.
    """
    return connection.execute(
        "DELETE FROM room_messages WHERE id IN"
        " (SELECT id FROM room_messages WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
        (before, limit),
    ).rowcount


def purge_stored_messages(connection: sqlite3.Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` undelivered direct messages sent before ``before``."""
    return connection.execute(
        "DELETE FROM stored_messages WHERE id IN"
        " (SELECT id FROM stored_messages WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
        (before, limit),
    ).rowcount


def purge_account_events(connection: sqlite3.Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` account events recorded before ``before``, but never the newest.

    A running server only ever asks for events newer than the last it saw,
    so events older than any server's poll interval are no one's business.
    The newest stays because ids are rowids: were the table emptied, the
    next event would reuse an id the server has already seen, and be missed.
    """
    return connection.execute(
        "DELETE FROM account_events WHERE id IN"
        " (SELECT id FROM account_events WHERE at < ?"
        "  AND id < (SELECT max(id) FROM account_events) ORDER BY id LIMIT ?)",
        (before, limit),
    ).rowcount


def message_id_range(connection: sqlite3.Connection) -> tuple[int, int]:
    """The lowest and highest ids of room and stored messages together (0, 0 if none)."""
    return connection.execute(
        "SELECT coalesce(min(low), 0), coalesce(max(high), 0) FROM ("
        " SELECT min(id) AS low, max(id) AS high FROM room_messages"
        " UNION ALL SELECT min(id), max(id) FROM stored_messages)"
    ).fetchone()


def erase_messages_from(
    connection: sqlite3.Connection, sender_key: str, first_id: int, last_id: int
) -> int:
    """Delete what ``sender_key`` wrote with ids in ``first_id..last_id``.

    Both room history and undelivered direct messages; senders are kept by
    display name, so this compares folded names. Working through a bounded
    id window keeps each transaction short on a table with no sender index.
    """
    deleted = 0
    for table in ("room_messages", "stored_messages"):
        deleted += connection.execute(
            f"DELETE FROM {table} WHERE id BETWEEN ? AND ? AND lower(sender) = ?",
            (first_id, last_id, sender_key),
        ).rowcount
    return deleted


def schema_version(connection: sqlite3.Connection) -> int:
    """The schema version stored in the database file's header."""
    return connection.execute("PRAGMA user_version").fetchone()[0]


@dataclass(frozen=True)
class TableStats:
    """A table's row count, its size on disk if known, and for messages their time span."""

    rows: int
    bytes: int | None = None
    oldest: int | None = None
    newest: int | None = None


@dataclass(frozen=True)
class DatabaseStats:
    """What ``chatd db stats`` reports about a database."""

    schema_version: int
    page_size: int
    pages: int
    free_pages: int
    banned_users: int
    tables: dict[str, TableStats]


TABLES = ("users", "rooms", "room_messages", "stored_messages", "account_events")
_TIMED_TABLES = ("room_messages", "stored_messages")


def _table_bytes(connection: sqlite3.Connection) -> dict[str, int]:
    """Bytes used by each table with its indexes; empty when SQLite lacks ``dbstat``."""
    try:
        rows = connection.execute(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat AS d"
            " LEFT JOIN sqlite_schema AS m ON m.name = d.name GROUP BY 1"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    return dict(rows)


def database_stats(connection: sqlite3.Connection) -> DatabaseStats:
    """Counts and sizes of everything chatd keeps."""
    sizes = _table_bytes(connection)
    tables = {}
    for table in TABLES:
        span = "min(sent_at), max(sent_at)" if table in _TIMED_TABLES else "NULL, NULL"
        rows, oldest, newest = connection.execute(
            f"SELECT count(*), {span} FROM {table}"
        ).fetchone()
        tables[table] = TableStats(rows, sizes.get(table), oldest, newest)

    def pragma(name: str) -> int:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]

    (banned,) = connection.execute("SELECT count(*) FROM users WHERE banned").fetchone()
    return DatabaseStats(
        schema_version=pragma("user_version"),
        page_size=pragma("page_size"),
        pages=pragma("page_count"),
        free_pages=pragma("freelist_count"),
        banned_users=banned,
        tables=tables,
    )


# --- running transactions off the reactor thread ----------------------------


_STOP = object()


class Database:
    """The server's handle on the database: a writer, a reader and a checkpointer thread.

    ``write`` queues a transaction body for the writer; the writer takes
    every body queued at that moment (up to ``MAX_BATCH``), runs each in its
    own savepoint inside one transaction, commits once, and only then fires
    the Deferreds, in queue order, on the reactor thread. ``read`` runs a
    body on the reader thread. Nothing here runs SQL on the reactor thread.

    The writer never checkpoints the WAL itself: a checkpoint syncs the disk,
    and every room message would wait behind that sync for its commit. The
    checkpointer thread copies the WAL back every ``CHECKPOINT_SECONDS``
    instead, beside the writer, without holding it up.
    """

    def __init__(
        self,
        path: str,
        reactor: IReactorFromThreads,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        """``on_commit(seconds, writes)``, if given, hears of each committed batch.

        It is called on the writer thread, so it must be thread-safe (metrics are).
        """
        self.path = path
        self._reactor = reactor
        self._on_commit = on_commit
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._closed: Deferred | None = None
        self.batches_committed = 0

    def open(self) -> Deferred:
        """Start the threads; fire with the schema version found once migrated."""
        opened: Deferred = Deferred()
        writer = threading.Thread(
            target=self._run_writer, args=(opened,), name="chatd-db-writer", daemon=True
        )
        reader = threading.Thread(target=self._run_reader, name="chatd-db-reader", daemon=True)
        checkpointer = threading.Thread(
            target=self._run_checkpointer, name="chatd-db-checkpointer", daemon=True
        )
        self._threads = [writer, reader, checkpointer]
        writer.start()
        return opened.addCallback(self._start_others, reader, checkpointer)

    def _start_others(self, found_version: int, *threads: threading.Thread) -> int:
        for thread in threads:
            thread.start()
        return found_version

    def write(self, body: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``body(connection, *args)`` in the next batch; fire after its commit."""
        done: Deferred = Deferred()
        self._writes.put((body, args, done))
        return done

    @property
    def queued_writes(self) -> int:
        """How many writes wait for the writer thread (roughly: it is another thread)."""
        return self._writes.qsize()

    def read(self, body: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``body(connection, *args)`` on the reader thread."""
        done: Deferred = Deferred()
        self._reads.put((body, args, done))
        return done

    def close(self) -> Deferred:
        """Finish every queued write, then close both connections."""
        if self._closed is None:
            self._closed = Deferred()
            remaining = [len(self._threads)]

            def one_stopped(_: object) -> None:
                remaining[0] -= 1
                if remaining[0] == 0:
                    self._closed.callback(None)

            self._stopped = one_stopped
            self._writes.put(_STOP)
            self._reads.put(_STOP)
            self._stopping.set()
        return self._closed

    def _report(self, outcomes: list[tuple[Deferred, Any]]) -> None:
        for done, outcome in outcomes:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

    def _run_writer(self, opened: Deferred) -> None:
        try:
            connection = connect(self.path)
            found = migrate(connection)
            connection.execute("PRAGMA wal_autocheckpoint = 0")
        except Exception:
            self._reactor.callFromThread(opened.errback, Failure())
            return
        self._reactor.callFromThread(opened.callback, found)
        stopping = False
        while not stopping:
            batch = [self._writes.get()]
            while len(batch) < MAX_BATCH and batch[-1] is not _STOP:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _STOP:
                stopping = True
                batch.pop()
            if batch:
                self._reactor.callFromThread(self._report, self._commit(connection, batch))
        connection.close()
        self._reactor.callFromThread(self._stopped, None)

    def _commit(self, connection: sqlite3.Connection, batch: list) -> list:
        outcomes: list[tuple[Deferred, Any]] = []
        started = time.perf_counter()
        try:
            connection.execute("BEGIN IMMEDIATE")
            for body, args, done in batch:
                connection.execute("SAVEPOINT write")
                try:
                    result = body(connection, *args)
                except Exception:
                    connection.execute("ROLLBACK TO write")
                    result = Failure()
                connection.execute("RELEASE write")
                outcomes.append((done, result))
            connection.execute("COMMIT")
        except Exception:
            failure = Failure()
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return [(done, failure) for _, _, done in batch]
        self.batches_committed += 1
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started, len(batch))
        return outcomes

    def _run_checkpointer(self) -> None:
        connection = connect(self.path)
        while not self._stopping.wait(CHECKPOINT_SECONDS):
            try:
                # PASSIVE: copy what it can without waiting for readers or the writer.
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as error:
                log.warn("WAL checkpoint failed: {error}", error=error)
        connection.close()
        self._reactor.callFromThread(self._stopped, None)

    def _run_reader(self) -> None:
        connection = connect(self.path)
        while True:
            item = self._reads.get()
            if item is _STOP:
                break
            body, args, done = item
            try:
                result = body(connection, *args)
            except Exception:
                result = Failure()
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._reactor.callFromThread(self._report, [(done, result)])
        connection.close()
        self._reactor.callFromThread(self._stopped, None)
