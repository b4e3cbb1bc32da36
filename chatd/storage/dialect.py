"""Where SQLite and PostgreSQL differ, in one place.

The named transactions (``chatd.storage.transactions``) are written once,
in SQL both databases understand: ``?`` placeholders, ``ON CONFLICT``
upserts, ``RETURNING``, booleans passed as Python ``bool``, subqueries with
aliases. A SQLite connection is used as it is; a PostgreSQL connection is
wrapped in a ``PostgresConnection``, which turns the ``?`` placeholders
into psycopg's ``%s`` (escaping any literal ``%``). What cannot be written
the same way for both (the schema version, the sizes of tables, making
account events commit in id order) is asked of ``dialect_of(connection)``.

The PostgreSQL schema gives ``room_members`` a ``rowid`` identity column,
standing for SQLite's implicit rowid, so "in the order joined" is the same
SQL on both.
"""

import sqlite3
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# The advisory lock key that makes account events commit in id order (see
# ``PostgresDialect.serialize_account_events``): "chat" in ASCII.
ACCOUNT_EVENTS_LOCK = 0x63686174


class Connection(Protocol):
    """What the named transactions use of a connection: DB-API ``execute``."""

    def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any:
        """Run one statement; return a cursor (fetchone, fetchall, iteration, rowcount)."""


def is_postgres_url(setting: str) -> bool:
    """Tell whether a ``CHATD_DB`` value names a PostgreSQL database rather than a file."""
    return setting.lower().startswith(POSTGRES_SCHEMES)


@lru_cache(maxsize=1024)
def postgres_sql(sql: str, with_parameters: bool) -> str:
    """A statement written with ``?`` placeholders, in psycopg's ``%s`` form.

    psycopg reads ``%`` as the start of a placeholder only when parameters
    are passed, so only then is a literal ``%`` doubled. No statement of
    chatd has a ``?`` inside a string literal.
    """
    if not with_parameters:
        return sql
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresConnection:
    """A psycopg connection that takes statements written with ``?`` placeholders.

    ``raw`` is the psycopg connection itself, in autocommit mode: the
    transactions are the ones its owner begins (``BEGIN``/``COMMIT``), as
    with SQLite's connections.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        """Run one statement; return psycopg's cursor."""
        if parameters:
            return self.raw.execute(postgres_sql(sql, True), tuple(parameters))
        return self.raw.execute(postgres_sql(sql, False))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one statement for each of ``rows``; the cursor's rowcount is their total."""
        cursor = self.raw.cursor()
        total = 0
        statement = postgres_sql(sql, True)
        for row in rows:
            cursor.execute(statement, tuple(row))
            total += max(cursor.rowcount, 0)
        return _Count(total)

    def close(self) -> None:
        """Close the connection to the server."""
        self.raw.close()

    @property
    def closed(self) -> bool:
        """True once the connection is closed or known to be broken."""
        return self.raw.closed or self.raw.broken


class _Count:
    """What ``executemany`` returns: only a rowcount is ever read of it."""

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


# A room message's row, with its room's sequence number.
_INSERT_INTO_ROOM_MESSAGES = (
    "INSERT INTO room_messages (room_id, sender, text, sent_at, kind, seq, msgid)"
)
# One numbered room message (``transactions.add_room_message`` uses it too).
INSERT_ROOM_MESSAGE = _INSERT_INTO_ROOM_MESSAGES + " VALUES (?, ?, ?, ?, ?, ?, ?)"
# Many numbered room messages on PostgreSQL, one array per column.
_INSERT_ROOM_MESSAGE_COLUMNS = (
    _INSERT_INTO_ROOM_MESSAGES + " SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[],"
    " ?::bigint[], ?::text[], ?::bigint[], ?::text[])"
)


def _next_seq_if(condition: str) -> str:
    """Take ``rooms.last_seq + 1`` for a room, only if ``condition`` holds."""
    return (
        "UPDATE rooms SET last_seq = last_seq + 1"
        f" WHERE id = ? AND {condition} RETURNING last_seq"
    )


class SQLiteDialect:
    """SQLite's answers."""

    name = "sqlite"

    def append_room_message(
        self,
        connection: Connection,
        condition: str,
        condition_parameters: Sequence[Any],
        row: Sequence[Any],
    ) -> int | None:
        """Number and insert a room message if ``condition`` (SQL) holds; its seq, or None.

        ``row`` is (room id, sender, text, sent at, kind, msgid). Two
        statements here (SQLite's common table expressions only read): the
        room's number, taken only if the condition holds, then the row.
        """
        room_id, sender, text, now, kind, msgid = row
        taken = connection.execute(
            _next_seq_if(condition), (room_id, *condition_parameters)
        ).fetchone()
        if taken is None:
            return None
        seq = taken[0]
        connection.execute(INSERT_ROOM_MESSAGE, (room_id, sender, text, now, kind, seq, msgid))
        return seq

    def insert_room_messages(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert numbered room messages, each row (room id, sender, text, sent at, kind,
        seq, msgid): one prepared statement run for each (SQLite has no round trips)."""
        connection.executemany(INSERT_ROOM_MESSAGE, rows)

    def schema_version(self, connection: Connection) -> int:
        """The schema version in the database file's header."""
        return connection.execute("PRAGMA user_version").fetchone()[0]

    def serialize_account_events(self, connection: Connection) -> None:
        """Nothing to do: SQLite has one writer at a time, so ids commit in order."""

    def table_bytes(self, connection: Connection) -> dict[str, int]:
        """Bytes used by each table with its indexes; empty when SQLite lacks ``dbstat``."""
        try:
            rows = connection.execute(
                "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat AS d"
                " LEFT JOIN sqlite_schema AS m ON m.name = d.name GROUP BY 1"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
        return dict(rows)

    def pages(self, connection: Connection) -> tuple[int, int, int]:
        """The page size, the pages in the file and the free ones."""
        return tuple(
            connection.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_size", "page_count", "freelist_count")
        )


class PostgresDialect:
    """PostgreSQL's answers."""

    name = "postgresql"

    def append_room_message(
        self,
        connection: Connection,
        condition: str,
        condition_parameters: Sequence[Any],
        row: Sequence[Any],
    ) -> int | None:
        """Number and insert a room message if ``condition`` (SQL) holds; its seq, or None.

        One statement, so one round trip to the server instead of three
        (check, number, insert): the number is taken in a data-modifying
        common table expression, under the room row's lock, as ``UPDATE``
        alone would.
        """
        room_id, sender, text, now, kind, msgid = row
        inserted = connection.execute(
            f"WITH taken AS ({_next_seq_if(condition)}) {_INSERT_INTO_ROOM_MESSAGES}"
            " SELECT ?, ?, ?, ?, ?, last_seq, ? FROM taken RETURNING seq",
            (room_id, *condition_parameters, room_id, sender, text, now, kind, msgid),
        ).fetchone()
        return None if inserted is None else inserted[0]

    def insert_room_messages(self, connection: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert numbered room messages, each row (room id, sender, text, sent at, kind,
        seq, msgid): one ``INSERT`` of seven arrays, so one round trip for them all.

        The statement is the same for any number of rows, so psycopg parses it
        once; a multi-row ``VALUES`` list was a new statement for each batch
        size, parsed again on every batch past psycopg's cache's length limit.
        """
        columns = [list(column) for column in zip(*rows, strict=True)]
        connection.execute(_INSERT_ROOM_MESSAGE_COLUMNS, columns)

    def schema_version(self, connection: Connection) -> int:
        """The version ``chatd_schema`` holds; 0 for a database chatd never used."""
        exists = connection.execute("SELECT to_regclass('chatd_schema') IS NOT NULL").fetchone()
        if not exists[0]:
            return 0
        row = connection.execute("SELECT version FROM chatd_schema").fetchone()
        return 0 if row is None else row[0]

    def serialize_account_events(self, connection: Connection) -> None:
        """Make account events commit in the order of their ids.

        A running server reads the events with ids above the last it saw; an
        identity column hands out ids at insert time, so two transactions
        (the server's writer and ``chatd user ban``, or two nodes) could
        commit ids out of order and the poller would skip the smaller one.
        A transaction-scoped advisory lock makes whoever records an event
        wait for any other that has until it commits.
        """
        connection.execute("SELECT pg_advisory_xact_lock(?)", (ACCOUNT_EVENTS_LOCK,))

    def table_bytes(self, connection: Connection) -> dict[str, int]:
        """Bytes used by each of chatd's tables with its indexes and TOAST."""
        rows = connection.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
        ).fetchall()
        return dict(rows)

    def pages(self, connection: Connection) -> tuple[int, int, int]:
        """The block size, the database's size in blocks, and 0 free (VACUUM reuses them)."""
        block, size = connection.execute(
            "SELECT current_setting('block_size')::int, pg_database_size(current_database())"
        ).fetchone()
        return block, size // block, 0


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()


def dialect_of(connection: Connection) -> SQLiteDialect | PostgresDialect:
    """The dialect of a connection: PostgreSQL's for a ``PostgresConnection``."""
    return POSTGRES if isinstance(connection, PostgresConnection) else SQLITE
