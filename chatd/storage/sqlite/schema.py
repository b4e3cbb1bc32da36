"""SQLite's side of storage: opening a database file, its schema and versioned migrations.

Each entry of ``MIGRATIONS`` moves the schema from its index to the next
version (never edit an old one); ``migrate`` applies the missing ones in one
transaction, and ``transaction`` is what the admin command line commits
named transactions with."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

BUSY_TIMEOUT_MS = 10_000
# The write-ahead log in use past which the checkpointer stops the writer
# briefly to empty it (a TRUNCATE checkpoint), and the size SQLite shrinks
# the file back to whenever it starts the log over. Under saturating writes
# a PASSIVE checkpoint never reaches the end of the log, which then only grows.
WAL_LIMIT_BYTES = 64 * 1024 * 1024

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
    # stored direct message keeps the id the core gave it (chatd.core.ids); each
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
    # 7: who made a room event (a kick's operator, a topic's setter): room
    # changes made in sessions are recorded too, for the other nodes of a
    # cluster (docs/cluster.md); empty for the admin command line's.
    """
    ALTER TABLE account_events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
    """,
    # 8: the history of direct messages (IRC's draft/chathistory, /history
    # <user>), apart from the mailbox (stored_messages), which keeps a message
    # only until it is delivered. Each account taking part in a conversation
    # keeps its own copy of each message (owner_id; peer_key is the other
    # side's folded name, a guest's too), so an account's deletion takes its
    # copies with it and a name registered again sees nothing of the old one's.
    # rooms.topic_open: MODE -t, anyone in a room with operators may set the topic.
    """
    CREATE TABLE direct_history (
        id INTEGER PRIMARY KEY,
        owner_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        peer_key TEXT NOT NULL,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        kind TEXT NOT NULL DEFAULT 'say',
        msgid TEXT NOT NULL
    );
    CREATE INDEX direct_history_by_peer ON direct_history (owner_id, peer_key, id);
    CREATE INDEX direct_history_by_time ON direct_history (sent_at);
    ALTER TABLE rooms ADD COLUMN topic_open INTEGER NOT NULL DEFAULT 0;
    """,
    # 9: voice (IRC's +v: a member who may speak in a moderated room, kept with
    # the membership) and moderated rooms (+m: only operators and voiced
    # members speak).
    """
    ALTER TABLE room_members ADD COLUMN voice INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN moderated INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: secret rooms (IRC's +s, and +p its older synonym): not listed, and
    # not shown to NAMES or WHO, for those who are not members. Independent
    # of private (+i), which decides who may join.
    """
    ALTER TABLE rooms ADD COLUMN secret INTEGER NOT NULL DEFAULT 0;
    """,
    # 11: when a room's topic was set (ms; IRC's 333 after a restart), with
    # its setter (rooms.topic_setter); 0 for a topic set before this, whose
    # time nobody knows.
    """
    ALTER TABLE rooms ADD COLUMN topic_at INTEGER NOT NULL DEFAULT 0;
    """,
    # 12: a direct message kept for someone offline keeps its kind (say, or a
    # notice: IRC's NOTICE arrives as NOTICE); the ones kept before were said.
    """
    ALTER TABLE stored_messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'say';
    """,
    # 13: room messages are found by (room_id, seq) since 6 (room_messages_by_seq,
    # which also serves a room's deletion); the index by (room_id, id) served
    # no query and cost every insert a B-tree update.
    """
    DROP INDEX room_messages_by_room;
    """,
)

# names.skeleton in SQL, the expression of the users_by_skeleton index.
SKELETON_SQL = (
    "replace(replace(replace(replace(replace(name_key,"
    " '1', 'l'), 'i', 'l'), '0', 'o'), 'rn', 'm'), 'vv', 'w')"
)

SCHEMA_VERSION = len(MIGRATIONS)


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


def schema_version(connection: sqlite3.Connection) -> int:
    """The schema version stored in the database file's header."""
    return connection.execute("PRAGMA user_version").fetchone()[0]
