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

import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.errors import ChatError
from chatd.names import skeleton

log = Logger()

BUSY_TIMEOUT_MS = 10_000
MAX_BATCH = 512
# How often the checkpointer copies the write-ahead log back into the database,
# and checks that the database's files are still the ones the server opened.
CHECKPOINT_SECONDS = 1.0
# The write-ahead log in use past which the checkpointer stops the writer
# briefly to empty it (a TRUNCATE checkpoint), and the size SQLite shrinks
# the file back to whenever it starts the log over. Under saturating writes
# a PASSIVE checkpoint never reaches the end of the log, which then only grows.
WAL_LIMIT_BYTES = 64 * 1024 * 1024
# How long emptying the log may wait for a reader of an older snapshot (a backup).
TRUNCATE_WAIT_MS = 200
# A log larger than this is emptied once the writer has been idle a checkpoint interval.
IDLE_WAL_BYTES = 4 * 1024 * 1024

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
    # 3: rooms people live in. Membership outlives sessions (until /part, a
    # kick or a ban); rooms keep a topic, operators, bans, invites and a
    # private flag; a message has a kind (said, or an action: /me); users
    # keep an away text and when they were last seen; account events also
    # carry the room changes the admin command line makes.
    """
    ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN topic_setter TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE room_members (
        room_id INTEGER NOT NULL REFERENCES rooms (id),
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        operator INTEGER NOT NULL DEFAULT 0,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE INDEX room_members_by_user ON room_members (user_id);
    CREATE INDEX room_operators ON room_members (room_id) WHERE operator;
    CREATE TABLE room_bans (
        room_id INTEGER NOT NULL REFERENCES rooms (id),
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        banned_by TEXT NOT NULL,
        banned_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE room_invites (
        room_id INTEGER NOT NULL REFERENCES rooms (id),
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        invited_by TEXT NOT NULL,
        invited_at INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX room_invites_by_user ON room_invites (user_id, delivered);
    ALTER TABLE room_messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'say';
    ALTER TABLE users ADD COLUMN away TEXT NOT NULL DEFAULT '';
    ALTER TABLE users ADD COLUMN last_seen INTEGER;
    ALTER TABLE account_events ADD COLUMN room_key TEXT;
    ALTER TABLE account_events ADD COLUMN user_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE account_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    """,
    # 4: look-alike user names (names.skeleton) are found by their skeleton.
    """
    CREATE INDEX users_by_skeleton ON users (
        replace(replace(replace(replace(replace(name_key,
            '1', 'l'), 'i', 'l'), '0', 'o'), 'rn', 'm'), 'vv', 'w')
    );
    """,
    # 5: users.id is reused once the newest account is deleted; a random
    # incarnation tells a name registered again from the account it replaced,
    # so a session is bound to (id, incarnation). Old accounts keep 0.
    """
    ALTER TABLE users ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: message ids and room sequences (issue 10). Every room message and
    # stored direct message keeps the id the core gave it (chatd.ids); each
    # room numbers its messages 1, 2, 3, ... without gaps (rooms.last_seq is
    # the last number given, taken in the transaction that inserts the
    # message) and history is read in that order. Messages stored before
    # ids existed get one made of their time and row id (node 0000), and
    # their rooms' sequences in row order.
    """
    ALTER TABLE rooms ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE room_messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE room_messages ADD COLUMN msgid TEXT NOT NULL DEFAULT '';
    ALTER TABLE stored_messages ADD COLUMN msgid TEXT NOT NULL DEFAULT '';
    UPDATE room_messages
        SET seq = numbered.seq,
            msgid = printf('%011x0000%05x', room_messages.sent_at, room_messages.id & 1048575)
        FROM (SELECT id, row_number() OVER (PARTITION BY room_id ORDER BY id) AS seq
              FROM room_messages) AS numbered
        WHERE numbered.id = room_messages.id;
    UPDATE stored_messages SET msgid = printf('%011x0000%05x', sent_at, id & 1048575);
    CREATE UNIQUE INDEX room_messages_by_seq ON room_messages (room_id, seq);
    UPDATE rooms SET last_seq =
        (SELECT coalesce(max(seq), 0) FROM room_messages WHERE room_id = rooms.id);
    """,
)

# A message id made by storage itself, for messages written without one (the
# admin tools, scripts and tests): the migration's form, chatd.ids's layout.
LEGACY_MSGID_SQL = "printf('%011x0000%05x', sent_at, id & 1048575)"

# names.skeleton in SQL, the expression of the users_by_skeleton index.
SKELETON_SQL = (
    "replace(replace(replace(replace(replace(name_key,"
    " '1', 'l'), 'i', 'l'), '0', 'o'), 'rn', 'm'), 'vv', 'w')"
)

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Account:
    """What a login needs to know about an account."""

    name: str
    password_hash: str
    banned: bool
    # users.id and users.incarnation: what a session is bound to, so a name
    # deleted and registered again is a different account.
    id: int = field(default=0, compare=False)
    incarnation: int = field(default=0, compare=False)

    @property
    def identity(self) -> tuple[int, int]:
        """What tells this account from any other ever stored under its name."""
        return (self.id, self.incarnation)


@dataclass(frozen=True)
class StoredRow:
    """A direct message waiting in the store for its recipient."""

    id: int
    sender: str
    text: str
    sent_at: int
    msgid: str = ""


# Message kinds: what was said, and an action (``/me waves``).
SAY = "say"
ACTION = "action"
# Who a change made by the admin command line is shown as coming from: not
# a valid user name, so it can never be mistaken for one.
ADMIN = "*admin"


@dataclass(frozen=True)
class HistoryRow:
    """A past message of a room."""

    id: int
    sender: str
    text: str
    sent_at: int
    kind: str = SAY
    seq: int = 0
    msgid: str = ""


@dataclass(frozen=True)
class AccountEvent:
    """An administrative change to an account or a room that live sessions must see.

    Room events (``action`` starting ``room-``) name the room by its key, the
    user by ``name_key`` and ``user_name``, and carry the topic or the kick's
    reason in ``detail``.
    """

    id: int
    name_key: str
    action: str
    room_key: str | None = None
    user_name: str = ""
    detail: str = ""


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
    connection.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
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
) -> int:
    """Add an account; return its id; raise ``user-exists`` if the name is taken in any case.

    A name that looks like an existing one (``aIice`` beside ``alice``: the
    same ``names.skeleton``) counts as taken too. A ``create`` event tells
    running servers that any session still open under this name belongs to
    an account gone before it.
    """
    look_alike = connection.execute(
        f"SELECT name FROM users WHERE {SKELETON_SQL} = ? AND name_key != ?",
        (skeleton(name), name.lower()),
    ).fetchone()
    if look_alike is not None:
        raise ChatError("user-exists", f"{name} is taken: it looks like {look_alike[0]}")
    try:
        cursor = connection.execute(
            "INSERT INTO users (name_key, name, password_hash, created_at, incarnation)"
            " VALUES (?, ?, ?, ?, ?)",
            (name.lower(), name, password_hash, now, secrets.randbits(62) + 1),
        )
    except sqlite3.IntegrityError:
        raise ChatError("user-exists", f"{name} is taken") from None
    record_account_event(connection, name.lower(), "create", now)
    return cursor.lastrowid


def find_account(connection: sqlite3.Connection, name_key: str) -> Account | None:
    """Return the account stored under ``name_key``, or None."""
    row = connection.execute(
        "SELECT name, password_hash, banned, id, incarnation FROM users WHERE name_key = ?",
        (name_key,),
    ).fetchone()
    return None if row is None else Account(row[0], row[1], bool(row[2]), row[3], row[4])


def find_account_for_login(
    connection: sqlite3.Connection, name_key: str
) -> tuple[Account | None, int]:
    """The account under ``name_key`` and the newest account event id, read together.

    A login notes the event id before its password check, so the check made
    again when its session starts sees every change made meanwhile.
    """
    return find_account(connection, name_key), last_account_event_id(connection)


def account_changes_since(
    connection: sqlite3.Connection, name_key: str, after_id: int
) -> tuple[Account | None, list[str], int]:
    """The account under ``name_key`` now, the actions on that name since event
    ``after_id`` (oldest first), and the newest event id."""
    account = find_account(connection, name_key)
    rows = connection.execute(
        "SELECT action FROM account_events WHERE name_key = ? AND id > ? ORDER BY id",
        (name_key, after_id),
    )
    return account, [action for (action,) in rows], last_account_event_id(connection)


def change_password_hash(
    connection: sqlite3.Connection, identity: tuple[int, int], password_hash: str, now: int
) -> int | None:
    """Set the password of the account ``identity`` (a password change); return the id
    of the ``passwd`` event that ends the account's other sessions, None if it is gone."""
    account_id, incarnation = identity
    row = connection.execute(
        "SELECT name_key FROM users WHERE id = ? AND incarnation = ?", (account_id, incarnation)
    ).fetchone()
    if row is None:
        return None
    connection.execute(
        "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, account_id)
    )
    record_account_event(connection, row[0], "passwd", now)
    return last_account_event_id(connection)


def upgrade_password_hash(
    connection: sqlite3.Connection, account_id: int, old_hash: str, new_hash: str
) -> bool:
    """Replace an account's hash by the same password at the current cost, unless the
    password changed meanwhile; not a password change, so no event."""
    cursor = connection.execute(
        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        (new_hash, account_id, old_hash),
    )
    return cursor.rowcount == 1


def user_exists(connection: sqlite3.Connection, name_key: str) -> bool:
    """Tell whether an account is stored under ``name_key``."""
    row = connection.execute("SELECT 1 FROM users WHERE name_key = ?", (name_key,)).fetchone()
    return row is not None


def set_password_hash(
    connection: sqlite3.Connection, name_key: str, password_hash: str, now: int | None = None
) -> bool:
    """Replace an account's password hash; return False if there is no such account.

    Given ``now``, it is a password change: a ``passwd`` event ends the
    account's sessions and the logins in progress.
    """
    cursor = connection.execute(
        "UPDATE users SET password_hash = ? WHERE name_key = ?", (password_hash, name_key)
    )
    if cursor.rowcount == 1 and now is not None:
        record_account_event(connection, name_key, "passwd", now)
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
        "SELECT id, name_key, action, room_key, user_name, detail FROM account_events"
        " WHERE id > ? ORDER BY id",
        (after_id,),
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


def require_sender(
    connection: sqlite3.Connection, sender: str, account: tuple[int, int] | None = None
) -> None:
    """Raise ``forbidden`` unless the account of ``sender`` (a display name) still exists,
    and is still ``account`` (its identity) when a session bound to one sends: a
    name deleted and registered again (the admin command line, in another
    process) is another account, whose name the old sessions must not use.

    Checked inside the transaction that stores the message: a deletion
    committed before it is seen, so no message of a deleted account is ever
    committed (or answered ``OK``) after the deletion, and erasing its
    messages once the deletion has committed finds every one of them.
    """
    if account is None:
        exists = user_exists(connection, sender.lower())
    else:
        exists = account_identities(connection, (sender.lower(),)).get(sender.lower()) == account
    if not exists:
        raise ChatError("forbidden", "your account has been deleted")


def account_identities(
    connection: sqlite3.Connection, name_keys: tuple[str, ...]
) -> dict[str, tuple[int, int]]:
    """The identity (users.id, users.incarnation) of each of ``name_keys`` that is an account."""
    identities = {}
    for name_key in name_keys:
        row = connection.execute(
            "SELECT id, incarnation FROM users WHERE name_key = ?", (name_key,)
        ).fetchone()
        if row is not None:
            identities[name_key] = (row[0], row[1])
    return identities


def post_room_message(
    connection: sqlite3.Connection,
    room_id: int,
    sender: str,
    text: str,
    now: int,
    kind: str = SAY,
    account: tuple[int, int] | None = None,
    msgid: str | None = None,
) -> int:
    """What a session's room message commits: ``add_room_message`` if its sender still
    exists (as ``account``, the identity its session is bound to, if given)."""
    require_sender(connection, sender, account)
    return add_room_message(connection, room_id, sender, text, now, kind, msgid)


def add_room_message(
    connection: sqlite3.Connection,
    room_id: int,
    sender: str,
    text: str,
    now: int,
    kind: str = SAY,
    msgid: str | None = None,
) -> int:
    """Append a message (``SAY``) or an action (``ACTION``) to a room's history.

    Returns the message's sequence number in the room: the room's next,
    taken in this transaction, so a room's numbers have no gaps and a
    rolled-back message gives its number back. ``msgid`` is the id the
    core made (chatd.ids); without one the message gets the migration's
    form of an id.
    """
    (seq,) = connection.execute(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", (room_id,)
    ).fetchone()
    cursor = connection.execute(
        "INSERT INTO room_messages (room_id, sender, text, sent_at, kind, seq, msgid)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (room_id, sender, text, now, kind, seq, msgid or ""),
    )
    if msgid is None:
        connection.execute(
            f"UPDATE room_messages SET msgid = {LEGACY_MSGID_SQL} WHERE id = ?",
            (cursor.lastrowid,),
        )
    return seq


_HISTORY_COLUMNS = "id, sender, text, sent_at, kind, seq, msgid"


def recent_room_messages(
    connection: sqlite3.Connection, room_id: int, limit: int
) -> list[HistoryRow]:
    """The last ``limit`` messages of a room, oldest first: one index range read."""
    rows = connection.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM room_messages"
        " WHERE room_id = ? ORDER BY seq DESC LIMIT ?",
        (room_id, limit),
    ).fetchall()
    return [HistoryRow(*row) for row in reversed(rows)]


def room_history_bounds(
    connection: sqlite3.Connection, room_id: int, count: int
) -> tuple[int, int] | None:
    """The first and last sequence numbers of a room's last ``count`` messages, or None."""
    low, high = connection.execute(
        "SELECT min(seq), max(seq) FROM"
        " (SELECT seq FROM room_messages WHERE room_id = ? ORDER BY seq DESC LIMIT ?)",
        (room_id, count),
    ).fetchone()
    return None if low is None else (low, high)


def room_messages_between(
    connection: sqlite3.Connection, room_id: int, first_seq: int, last_seq: int, limit: int
) -> list[HistoryRow]:
    """Up to ``limit`` messages of a room numbered ``first_seq`` to ``last_seq``, in order."""
    rows = connection.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM room_messages"
        " WHERE room_id = ? AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
        (room_id, first_seq, last_seq, limit),
    ).fetchall()
    return [HistoryRow(*row) for row in rows]


# --- membership, topics, operators, bans, invites -----------------------------

LOBBY_KEY = "#lobby"


@dataclass(frozen=True)
class RoomState:
    """What the server keeps of a room while it has members online."""

    id: int
    name: str
    topic: str
    topic_setter: str
    private: bool
    operators: tuple[str, ...]
    recent: list[HistoryRow]


@dataclass(frozen=True)
class Arrival:
    """What a user's first session needs: its rooms, its invites, its away text.

    Each room comes with its state when the server asked for it to be loaded.
    """

    rooms: list[tuple[str, "RoomState | None"]]
    invites: list[tuple[str, str]]
    away: str


@dataclass(frozen=True)
class Banned:
    """The outcome of a ban: the user's display name, and what they lost."""

    name: str
    was_member: bool
    was_operator: bool


@dataclass(frozen=True)
class Whois:
    """What ``/whois`` tells about an account."""

    name: str
    away: str
    last_seen: int | None
    shared_rooms: list[str]


@dataclass(frozen=True)
class RoomListing:
    """One room as ``chatd room list`` shows it."""

    name: str
    members: int
    private: bool
    operators: tuple[str, ...]
    topic: str


def _user(connection: sqlite3.Connection, name_key: str) -> tuple[int, str]:
    """The id and display name of an account; ``no-such-user`` if there is none."""
    row = connection.execute(
        "SELECT id, name FROM users WHERE name_key = ?", (name_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-user", f"there is no user {name_key}")
    return row[0], row[1]


def _room(connection: sqlite3.Connection, room_key: str) -> tuple[int, str, bool]:
    """The id, display name and private flag of a room; ``no-such-room`` if none."""
    row = connection.execute(
        "SELECT id, name, private FROM rooms WHERE name_key = ?", (room_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-room", f"there is no room {room_key}")
    return row[0], row[1], bool(row[2])


def _membership(connection: sqlite3.Connection, room_id: int, user_id: int) -> bool | None:
    """None when not a member, else whether the member is an operator."""
    row = connection.execute(
        "SELECT operator FROM room_members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    ).fetchone()
    return None if row is None else bool(row[0])


def room_operators(connection: sqlite3.Connection, room_id: int) -> tuple[str, ...]:
    """The display names of a room's operators, sorted case-insensitively."""
    rows = connection.execute(
        "SELECT u.name FROM room_members AS m JOIN users AS u ON u.id = m.user_id"
        " WHERE m.room_id = ? AND m.operator ORDER BY u.name_key",
        (room_id,),
    )
    return tuple(row[0] for row in rows)


def load_room(
    connection: sqlite3.Connection, name: str, now: int, history_limit: int
) -> RoomState:
    """Find (or create) a room; return all the server keeps of it."""
    room_id, display_name, recent = open_room(connection, name, now, history_limit)
    topic, setter, private = connection.execute(
        "SELECT topic, topic_setter, private FROM rooms WHERE id = ?", (room_id,)
    ).fetchone()
    operators = room_operators(connection, room_id)
    return RoomState(room_id, display_name, topic, setter, bool(private), operators, recent)


def join_room(connection: sqlite3.Connection, name: str, user_key: str, now: int) -> str:
    """Make a user a member of a room, creating it; return the room's display name.

    The user who creates a room (any but #lobby) is its first operator. A
    user banned from the room, or not invited to a private room, is refused
    with ``forbidden``; joining uses up the invite.
    """
    user_id, _ = _user(connection, user_key)
    created = connection.execute(
        "INSERT OR IGNORE INTO rooms (name_key, name, created_at) VALUES (?, ?, ?)",
        (name.lower(), name, now),
    ).rowcount
    room_id, display_name, private = _room(connection, name.lower())
    if _membership(connection, room_id, user_id) is not None:
        return display_name
    banned = connection.execute(
        "SELECT 1 FROM room_bans WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    ).fetchone()
    if banned:
        raise ChatError("forbidden", f"you are banned from {display_name}")
    invited = connection.execute(
        "DELETE FROM room_invites WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    ).rowcount
    if private and not invited:
        raise ChatError("forbidden", f"{display_name} is private: you need an invitation")
    operator = bool(created) and name.lower() != LOBBY_KEY
    connection.execute(
        "INSERT INTO room_members (room_id, user_id, operator, joined_at) VALUES (?, ?, ?, ?)",
        (room_id, user_id, int(operator), now),
    )
    return display_name


def enter_room(
    connection: sqlite3.Connection,
    name: str,
    user_key: str,
    now: int,
    history_limit: int | None,
) -> tuple[str, RoomState | None]:
    """``join_room``, and the room's state too unless ``history_limit`` is None.

    One transaction where the server has not got the room loaded: the join
    costs one commit either way.
    """
    display_name = join_room(connection, name, user_key, now)
    if history_limit is None:
        return display_name, None
    return display_name, load_room(connection, display_name, now, history_limit)


def arrive(
    connection: sqlite3.Connection,
    user_key: str,
    now: int,
    loaded: frozenset[str] = frozenset(),
    history_limit: int = 50,
) -> Arrival:
    """A user's first session: rejoin #lobby, take the invites, note the time.

    Returns the user's rooms (#lobby first unless banned from it, then the
    others in the order joined: rowids grow) with the state of those whose keys are not
    in ``loaded``, the invites not yet shown (now marked shown) and the away
    text.
    """
    user_id, _ = _user(connection, user_key)
    # Banned from #lobby by an administrator: the other rooms still count.
    with suppress(ChatError):
        join_room(connection, "#lobby", user_key, now)
    names = [
        row[0]
        for row in connection.execute(
            "SELECT r.name FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
            " WHERE m.user_id = ? ORDER BY r.name_key != ?, m.rowid",
            (user_id, LOBBY_KEY),
        )
    ]
    rooms = [
        (name, None if name.lower() in loaded else load_room(connection, name, now, history_limit))
        for name in names
    ]
    invites = connection.execute(
        "SELECT r.name, i.invited_by FROM room_invites AS i JOIN rooms AS r ON r.id = i.room_id"
        " WHERE i.user_id = ? AND NOT i.delivered ORDER BY i.invited_at, r.name_key",
        (user_id,),
    ).fetchall()
    if invites:
        connection.execute("UPDATE room_invites SET delivered = 1 WHERE user_id = ?", (user_id,))
    (away,) = connection.execute(
        "UPDATE users SET last_seen = ? WHERE id = ? RETURNING away", (now, user_id)
    ).fetchone()
    return Arrival(rooms, [(room, by) for room, by in invites], away)


def leave_room(connection: sqlite3.Connection, room_id: int, user_key: str) -> bool:
    """End a membership (``/part``); return whether there was one."""
    return (
        connection.execute(
            "DELETE FROM room_members WHERE room_id = ?"
            " AND user_id = (SELECT id FROM users WHERE name_key = ?)",
            (room_id, user_key),
        ).rowcount
        == 1
    )


def set_topic(connection: sqlite3.Connection, room_id: int, text: str, setter: str) -> None:
    """Set (or, with empty text, clear) a room's topic."""
    connection.execute(
        "UPDATE rooms SET topic = ?, topic_setter = ? WHERE id = ?", (text, setter, room_id)
    )


def set_operator(
    connection: sqlite3.Connection, room_id: int, user_key: str, operator: bool
) -> tuple[str, tuple[str, ...]]:
    """Make a member an operator or not; return their name and the room's operators.

    ``no-such-user`` when there is no such account or it is not a member.
    """
    user_id, name = _user(connection, user_key)
    changed = connection.execute(
        "UPDATE room_members SET operator = ? WHERE room_id = ? AND user_id = ?",
        (int(operator), room_id, user_id),
    ).rowcount
    if not changed:
        raise ChatError("no-such-user", f"{name} is not a member")
    return name, room_operators(connection, room_id)


def remove_member(
    connection: sqlite3.Connection, room_id: int, user_key: str
) -> tuple[str, bool]:
    """Take a member out of a room (a kick); return their name and whether they were an operator.

    ``no-such-user`` when there is no such account or it is not a member.
    """
    user_id, name = _user(connection, user_key)
    operator = _membership(connection, room_id, user_id)
    if operator is None:
        raise ChatError("no-such-user", f"{name} is not a member")
    connection.execute(
        "DELETE FROM room_members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )
    return name, operator


def ban_user(
    connection: sqlite3.Connection, room_id: int, user_key: str, by: str, now: int
) -> Banned:
    """Ban an account from a room, ending its membership and invitation."""
    user_id, name = _user(connection, user_key)
    operator = _membership(connection, room_id, user_id)
    connection.execute(
        "INSERT OR IGNORE INTO room_bans (room_id, user_id, banned_by, banned_at)"
        " VALUES (?, ?, ?, ?)",
        (room_id, user_id, by, now),
    )
    for table in ("room_members", "room_invites"):
        connection.execute(
            f"DELETE FROM {table} WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
    return Banned(name, operator is not None, bool(operator))


def room_bans(connection: sqlite3.Connection, room_id: int) -> list[tuple[str, str, int]]:
    """A room's bans, oldest first: (banned account's name, banned by, when in ms)."""
    rows = connection.execute(
        "SELECT users.name, room_bans.banned_by, room_bans.banned_at FROM room_bans"
        " JOIN users ON users.id = room_bans.user_id WHERE room_bans.room_id = ?"
        " ORDER BY room_bans.banned_at, users.name_key",
        (room_id,),
    )
    return [(name, by, at) for name, by, at in rows]


def unban_user(connection: sqlite3.Connection, room_id: int, user_key: str) -> str:
    """Lift an account's ban from a room; return its display name."""
    user_id, name = _user(connection, user_key)
    connection.execute(
        "DELETE FROM room_bans WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )
    return name


def set_private(connection: sqlite3.Connection, room_id: int, private: bool) -> None:
    """Make a room private (members and invited users only) or public."""
    connection.execute("UPDATE rooms SET private = ? WHERE id = ?", (int(private), room_id))


def invite_user(
    connection: sqlite3.Connection,
    room_id: int,
    user_key: str,
    by: str,
    now: int,
    delivered: bool,
) -> str:
    """Invite an account into a room; return its display name.

    ``delivered`` says whether the invited user was told at once; if not,
    their next login shows it.
    """
    user_id, name = _user(connection, user_key)
    connection.execute(
        "INSERT OR REPLACE INTO room_invites (room_id, user_id, invited_by, invited_at, delivered)"
        " VALUES (?, ?, ?, ?, ?)",
        (room_id, user_id, by, now, int(delivered)),
    )
    return name


def visible_rooms(connection: sqlite3.Connection, user_key: str) -> list[tuple[str, int]]:
    """Rooms with members, with how many, for ``/rooms``: private ones only to their members."""
    # Counted off the primary key's index, room by room; the asker's own rooms once.
    rows = connection.execute(
        "SELECT r.name, c.members FROM"
        " (SELECT room_id, count(*) AS members FROM room_members GROUP BY room_id) AS c"
        " JOIN rooms AS r ON r.id = c.room_id"
        " WHERE NOT r.private OR r.id IN (SELECT room_id FROM room_members WHERE user_id ="
        "  (SELECT id FROM users WHERE name_key = ?))"
        " ORDER BY r.name_key",
        (user_key,),
    )
    return [(name, count) for name, count in rows]


def is_member(connection: sqlite3.Connection, room_key: str, user_key: str) -> bool:
    """Tell whether a user is a member of a room."""
    row = connection.execute(
        "SELECT 1 FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
        " JOIN users AS u ON u.id = m.user_id WHERE r.name_key = ? AND u.name_key = ?",
        (room_key, user_key),
    ).fetchone()
    return row is not None


# --- presence: away and last seen ----------------------------------------------


def set_away(connection: sqlite3.Connection, user_key: str, text: str) -> None:
    """Set a user's away text; empty means back."""
    connection.execute("UPDATE users SET away = ? WHERE name_key = ?", (text, user_key))


def set_last_seen(connection: sqlite3.Connection, user_key: str, now: int) -> None:
    """Note that a user's last session ended now."""
    connection.execute("UPDATE users SET last_seen = ? WHERE name_key = ?", (now, user_key))


def away_text(connection: sqlite3.Connection, user_key: str) -> str:
    """A user's away text, empty when not away or no such user."""
    row = connection.execute("SELECT away FROM users WHERE name_key = ?", (user_key,)).fetchone()
    return "" if row is None else row[0]


def whois(connection: sqlite3.Connection, user_key: str, asker_key: str) -> Whois:
    """What ``/whois`` shows; the rooms are those the asker shares with the user."""
    row = connection.execute(
        "SELECT id, name, away, last_seen FROM users WHERE name_key = ?", (user_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-user", f"there is no user {user_key}")
    user_id, name, away, last_seen = row
    shared = connection.execute(
        "SELECT r.name FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
        " WHERE m.user_id = ? AND m.room_id IN ("
        "  SELECT room_id FROM room_members WHERE user_id ="
        "  (SELECT id FROM users WHERE name_key = ?))"
        " ORDER BY r.name_key",
        (user_id, asker_key),
    )
    return Whois(name, away, last_seen, [room for (room,) in shared])


# --- the admin command line's room commands ------------------------------------


def list_rooms(connection: sqlite3.Connection) -> list[RoomListing]:
    """Every room, with its member count, privacy, operators and topic."""
    rows = connection.execute(
        "SELECT r.id, r.name, r.private, r.topic,"
        " (SELECT count(*) FROM room_members WHERE room_id = r.id)"
        " FROM rooms AS r ORDER BY r.name_key"
    ).fetchall()
    return [
        RoomListing(name, members, bool(private), room_operators(connection, room_id), topic)
        for room_id, name, private, topic, members in rows
    ]


def record_room_event(
    connection: sqlite3.Connection,
    action: str,
    room_key: str,
    user_key: str,
    user_name: str,
    detail: str,
    now: int,
) -> None:
    """Note a room change the running server must show (``room-op``, ``room-kick``, ...)."""
    connection.execute(
        "INSERT INTO account_events (name_key, action, at, room_key, user_name, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_key, action, now, room_key, user_name, detail),
    )


def admin_room_change(
    connection: sqlite3.Connection, action: str, room_key: str, user_key: str, detail: str, now: int
) -> str:
    """Do one ``chatd room`` command in the database and record it for the server.

    ``action`` is ``op``, ``deop``, ``kick``, ``ban``, ``unban`` or ``topic``
    (``detail`` is the topic, or a kick's reason). Returns what was done, for
    the operator; raises ``ChatError`` when it cannot be done.
    """
    room_id, room_name, _private = _room(connection, room_key)
    user_name = ""
    if action in ("op", "deop"):
        user_name, _ = set_operator(connection, room_id, user_key, action == "op")
        still = "now" if action == "op" else "no longer"
        done = f"{user_name} is {still} an operator of {room_name}"
    elif action == "kick":
        user_name, _ = remove_member(connection, room_id, user_key)
        done = f"kicked {user_name} from {room_name}"
    elif action == "ban":
        user_name = ban_user(connection, room_id, user_key, ADMIN, now).name
        done = f"banned {user_name} from {room_name}"
    elif action == "unban":
        user_name = unban_user(connection, room_id, user_key)
        done = f"lifted the ban of {user_name} from {room_name}"
    elif action == "topic":
        set_topic(connection, room_id, detail, ADMIN)
        done = f"topic of {room_name} {'set' if detail else 'cleared'}"
    else:
        raise ValueError(f"unknown room action {action}")
    record_room_event(connection, "room-" + action, room_key, user_key, user_name, detail, now)
    return done


# --- direct messages kept for offline users --------------------------------


def store_direct_message(
    connection: sqlite3.Connection,
    recipient_key: str,
    sender: str,
    text: str,
    now: int,
    limit: int | None = None,
    msgid: str | None = None,
) -> str:
    """Keep a direct message for an offline user; return the recipient's display name.

    Its time is ``now``, or a millisecond after the user's latest kept
    message if that is not earlier. ``msgid`` is the id the core made
    (chatd.ids); without one the message gets the migration's form of an
    id. Raises ``no-such-user`` when there is no such account, and
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
    # Each message kept for a user gets a timestamp of its own, later than the
    # one before it: a STORED line sent again is known by its timestamp alone.
    last = connection.execute(
        "SELECT sent_at FROM stored_messages WHERE recipient_id = ? ORDER BY id DESC LIMIT 1",
        (recipient_id,),
    ).fetchone()
    sent_at = now if last is None or now > last[0] else last[0] + 1
    cursor = connection.execute(
        "INSERT INTO stored_messages (recipient_id, sender, text, sent_at, msgid)"
        " VALUES (?, ?, ?, ?, ?)",
        (recipient_id, sender, text, sent_at, msgid or ""),
    )
    if msgid is None:
        connection.execute(
            f"UPDATE stored_messages SET msgid = {LEGACY_MSGID_SQL} WHERE id = ?",
            (cursor.lastrowid,),
        )
    return name


def post_direct_message(
    connection: sqlite3.Connection,
    recipient_key: str,
    sender: str,
    text: str,
    now: int,
    limit: int | None = None,
    account: tuple[int, int] | None = None,
    msgid: str | None = None,
) -> str:
    """What a session's stored DM commits: ``store_direct_message`` if its sender still
    exists (as ``account``, the identity its session is bound to, if given)."""
    require_sender(connection, sender, account)
    return store_direct_message(connection, recipient_key, sender, text, now, limit, msgid)


def stored_messages_page(
    connection: sqlite3.Connection, recipient_key: str, after_id: int, limit: int
) -> list[StoredRow]:
    """Up to ``limit`` messages waiting for a user with ids above ``after_id``, oldest first.

    Nothing is removed: a page leaves the store through
    ``delete_stored_messages`` once it was handed over.
    """
    rows = connection.execute(
        "SELECT s.id, s.sender, s.text, s.sent_at, s.msgid FROM stored_messages AS s"
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
    Once the account's deletion has committed, no message of it can commit
    any more (``require_sender``), so the highest id of either table read in
    the deleting transaction bounds every message the account ever sent.
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


TABLES = (
    "users",
    "rooms",
    "room_messages",
    "stored_messages",
    "account_events",
    "room_members",
    "room_bans",
    "room_invites",
)
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


class FileGuard:
    """Notices the database's files being removed, replaced or made unwritable.

    SQLite keeps writing to the files it opened: after ``rm chatd.sqlite3*``
    every commit lands in deleted files and is gone at the next start, and a
    ``-shm`` that can no longer be written (``chattr +i``) kills the process
    with SIGBUS at the next write or checkpoint. So before every batch and
    every checkpoint the guard compares each path's device and inode with
    those of the file the server opened, and checks the path is writable:
    a few ``stat`` calls, microseconds against a commit's milliseconds.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.files = (path, path + "-wal", path + "-shm")
        self._identities: dict[str, tuple[int, int]] = {}

    def remember(self) -> None:
        """Take the files there now as the ones the server opened."""
        for name in self.files:
            try:
                found = os.stat(name)
            except FileNotFoundError:
                continue
            self._identities[name] = (found.st_dev, found.st_ino)

    def problem(self) -> str | None:
        """What is wrong with the database's files, or None when they are as opened."""
        for name in self.files:
            try:
                found = os.stat(name)
            except FileNotFoundError:
                if name in self._identities:
                    return f"{name} was removed"
                continue  # the -wal and -shm appear with the first transaction
            except OSError as error:
                return f"{name} cannot be checked: {error.strerror}"
            identity = (found.st_dev, found.st_ino)
            if self._identities.setdefault(name, identity) != identity:
                return f"{name} was replaced by another file"
            if not os.access(name, os.W_OK):
                return f"{name} is not writable (read-only or immutable)"
        return None


def unavailable_error() -> ChatError:
    """What a client is told for a write the server cannot keep."""
    return ChatError("unavailable", "the server cannot store anything now; try again later")


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
    instead, beside the writer, without holding it up (PASSIVE). Only when
    the log has passed ``wal_limit_bytes`` anyway (saturating writes outrun
    a passive checkpoint) does the writer, between two batches, run a
    TRUNCATE checkpoint that empties the file; it does so on its own once
    the file passes twice the limit, so the log stays under twice the limit
    and one batch. ``journal_size_limit`` shrinks the file whenever SQLite
    starts the log over on its own.

    Before every batch, and with every checkpoint, a ``FileGuard`` checks the
    database's files are still the ones opened. Once they are not, the
    database is ``unavailable`` for good (until a restart): every write
    fails with ``ChatError("unavailable")`` and nothing is checkpointed,
    while reads still answer from what was opened.
    """

    def __init__(
        self,
        path: str,
        reactor: IReactorFromThreads,
        on_commit: Callable[[float, int], None] | None = None,
        on_checkpoint: Callable[[str, float, int], None] | None = None,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
        checkpoint_seconds: float | None = None,
    ) -> None:
        """``on_commit(seconds, writes)``, if given, hears of each committed batch;
        ``on_checkpoint(mode, seconds, wal_bytes)`` of each checkpoint, with the
        size of the log file after it.

        Both are called on database threads, so they must be thread-safe (metrics are).
        """
        self.path = path
        self._reactor = reactor
        self._on_commit = on_commit
        self._on_checkpoint = on_checkpoint
        self.wal_limit_bytes = wal_limit_bytes
        # None: CHECKPOINT_SECONDS as it is when the database opens.
        self._checkpoint_seconds = checkpoint_seconds
        in_memory = path == ":memory:" or path.startswith("file:")
        self._guard = None if in_memory else FileGuard(os.path.abspath(path))
        # Why writes are refused, once the files are not the ones opened; set once.
        self.unavailable: str | None = None
        # The size of the write-ahead log at the last checkpoint.
        self.wal_bytes = 0
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._truncate_wanted = threading.Event()
        # Held by whichever thread checkpoints: SQLite lets only one at a time.
        self._checkpointing = threading.Lock()
        self._truncate_not_before = 0.0
        self._closed: Deferred | None = None
        self.batches_committed = 0

    def open(self) -> Deferred:
        """Start the threads; fire with the schema version found once migrated."""
        if self._checkpoint_seconds is None:
            self._checkpoint_seconds = CHECKPOINT_SECONDS
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
        """Run ``body(connection, *args)`` in the next batch; fire after its commit.

        Fails with ``ChatError("unavailable")`` once the database's files are
        not the ones opened: nothing written then would be kept.
        """
        if self.unavailable is not None:
            return fail(unavailable_error())
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

    def _close(self, connection: sqlite3.Connection) -> None:
        """Close a connection, unless the files are not the ones opened.

        The last connection to close checkpoints the log and removes it,
        which writes the ``-shm``: with that file immutable, a SIGBUS at
        shutdown. Left open, the connection goes with the process.
        """
        if self.unavailable is None:
            connection.close()

    def _report(self, outcomes: list[tuple[Deferred, Any]]) -> None:
        for done, outcome in outcomes:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

    def _check_files(self) -> bool:
        """True while the files are the ones opened; else make the database unavailable."""
        if self.unavailable is not None:
            return False
        problem = None if self._guard is None else self._guard.problem()
        if problem is None:
            return True
        self.unavailable = problem
        self._reactor.callFromThread(self._report_unavailable, problem)
        return False

    def _report_unavailable(self, problem: str) -> None:
        log.critical(
            "database {path} is unavailable: {problem}; every write is refused"
            " until chatd is restarted with its database in place",
            path=self.path,
            problem=problem,
        )

    def _run_writer(self, opened: Deferred) -> None:
        try:
            connection = connect(self.path)
            found = migrate(connection)
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute(f"PRAGMA journal_size_limit = {self.wal_limit_bytes}")
            if self._guard is not None:
                self._guard.remember()
        except Exception:
            self._reactor.callFromThread(opened.errback, Failure())
            return
        self._reactor.callFromThread(opened.callback, found)
        stopping = False
        while not stopping:
            try:
                # Woken now and then while idle, to empty the log after a burst.
                batch = [self._writes.get(timeout=self._checkpoint_seconds)]
            except queue.Empty:
                self._bound_wal(connection, idle=True)
                continue
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
                self._bound_wal(connection)
        self._close(connection)
        self._reactor.callFromThread(self._stopped, None)

    def _commit(self, connection: sqlite3.Connection, batch: list) -> list:
        outcomes: list[tuple[Deferred, Any]] = []
        started = time.perf_counter()
        if not self._check_files():
            # Checked before BEGIN: with an unwritable -shm the write itself would SIGBUS.
            refused = Failure(unavailable_error())
            return [(done, refused) for _, _, done in batch]
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
            if not self._check_files():
                # Removed while the batch ran: committing would only write to deleted files.
                raise unavailable_error()
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
        connection.execute(f"PRAGMA journal_size_limit = {self.wal_limit_bytes}")
        while not self._stopping.wait(self._checkpoint_seconds):
            # A checkpoint writes the -shm too: with it immutable, that is a SIGBUS.
            if not self._check_files():
                continue
            try:
                with self._checkpointing:
                    self.checkpoint(connection)
            except sqlite3.Error as error:
                log.warn("WAL checkpoint failed: {error}", error=error)
        self._close(connection)
        self._reactor.callFromThread(self._stopped, None)

    def checkpoint(self, connection: sqlite3.Connection) -> bool:
        """Copy the log back into the database beside the writer; True if it is over the limit.

        A PASSIVE checkpoint, which waits for nobody. When the log it found
        is still over ``wal_limit_bytes`` (the writer outran it), it asks the
        writer to empty the log between two batches (``_bound_wal``).
        """
        started = time.perf_counter()
        ((_, log_frames, _),) = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
        self._observe_checkpoint("PASSIVE", started)
        # Each frame is a page and its 24-byte header; the file itself may be
        # larger than the frames in use, having grown before SQLite started over.
        over = max(log_frames * (page_size + 24), self.wal_bytes) > self.wal_limit_bytes
        if over:
            self._truncate_wanted.set()
        return over

    def _bound_wal(self, connection: sqlite3.Connection, idle: bool = False) -> None:
        """After a batch, or idle, on the writer thread: empty the log if it has grown too far.

        Asked for by the checkpointer once the log passes the limit, the
        writer tries when no checkpoint is running. Past twice the limit (the
        checkpointer was late: a busy machine, a slow disk sync) it waits for
        the running checkpoint to end, holding further batches up, so the file
        never grows past twice the limit and a batch. With nothing to write
        for a checkpoint interval it empties any log of more than
        ``IDLE_WAL_BYTES``: that holds up nobody. A TRUNCATE that could not
        finish (a reader on an old snapshot) is not retried before the next
        checkpoint interval, so a long backup holds writes up only briefly.
        """
        if time.monotonic() < self._truncate_not_before:
            return
        size = self._wal_file_bytes()
        if size > 2 * self.wal_limit_bytes or (idle and size > IDLE_WAL_BYTES):
            self._truncate(connection, wait=True)
        elif self._truncate_wanted.is_set():
            self._truncate(connection, wait=idle)

    def _truncate(self, connection: sqlite3.Connection, wait: bool) -> None:
        """Copy the rest of the log back into the database and empty it (on the writer thread).

        Run by the writer itself, between two batches, so no batch slips in
        meanwhile (a checkpointer competing for the write lock through the
        busy handler lost to a saturating writer for a second and more, while
        the log grew by tens of megabytes). The PASSIVE checkpoint before it
        copied most of the log already. A reader on an older snapshot (a
        backup in progress) can hold it up: it gives up after
        ``TRUNCATE_WAIT_MS`` rather than stall every write.
        """
        if not self._checkpointing.acquire(blocking=wait):
            return  # a checkpoint is running: after the next batch
        try:
            self._truncate_wanted.clear()
            if not self._check_files():
                return
            started = time.perf_counter()
            connection.execute(f"PRAGMA busy_timeout = {TRUNCATE_WAIT_MS}")
            try:
                ((busy, _, _),) = connection.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                ).fetchall()
            except sqlite3.Error as error:
                log.warn("WAL checkpoint failed: {error}", error=error)
                busy = True
            finally:
                connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if busy:
                self._truncate_not_before = time.monotonic() + self._checkpoint_seconds
            self._observe_checkpoint("TRUNCATE", started)
        finally:
            self._checkpointing.release()

    def _wal_file_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def _observe_checkpoint(self, mode: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.wal_bytes = self._wal_file_bytes()
        if self._on_checkpoint is not None:
            self._on_checkpoint(mode, seconds, self.wal_bytes)

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
        self._close(connection)
        self._reactor.callFromThread(self._stopped, None)
