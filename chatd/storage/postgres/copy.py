"""``chatd db copy``: a single-node SQLite installation moved into PostgreSQL, verified by counts.

Every table is copied in one PostgreSQL transaction from one SQLite read
snapshot, ids and all (so sessions, cursors and message ids keep meaning
what they meant; ``room_members`` keeps SQLite's rowid, the order rooms
were joined in). SQLite's 0/1 flags become booleans, each identity
sequence is moved past the ids copied, and before committing the rows of
every table are counted on both sides: any difference rolls the whole copy
back. The target must be empty (a fresh database, or one ``chatd db init``
made); nothing is merged.
"""

import sqlite3
from dataclasses import dataclass

from chatd.storage import transactions
from chatd.storage.postgres import schema
from chatd.storage.sqlite import schema as sqlite_schema


class CopyError(Exception):
    """The copy cannot be made; the message is for the operator."""


@dataclass(frozen=True)
class CopyResult:
    """What was copied: the rows of each table, counted on both sides and equal."""

    rows: dict[str, int]


# Parents before children, for the foreign keys.
COPY_ORDER = (
    "users",
    "rooms",
    "room_messages",
    "stored_messages",
    "account_events",
    "room_members",
    "room_bans",
    "room_invites",
    "direct_history",
)


def _columns(target, table: str) -> list[str]:
    rows = target.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [name for (name,) in rows]


def copy_sqlite_to_postgres(source: sqlite3.Connection, url: str) -> CopyResult:
    """Copy the chatd database open on ``source`` into the PostgreSQL database at ``url``."""
    found = sqlite_schema.schema_version(source)
    if found != sqlite_schema.SCHEMA_VERSION:
        raise CopyError(
            f"the SQLite database is at schema version {found}, not {sqlite_schema.SCHEMA_VERSION}:"
            " bring it up to date first with `chatd db init --db FILE`"
        )
    target = schema.connect(url)
    try:
        schema.migrate(target)
        source.execute("BEGIN")  # one snapshot of every table
        try:
            with schema.transaction(target):
                for table in COPY_ORDER:
                    (present,) = target.execute(f"SELECT count(*) FROM {table}").fetchone()
                    if present:
                        raise CopyError(
                            f"the PostgreSQL database is not empty ({table} has {present} rows);"
                            " copy into a new database"
                        )
                rows = {table: _copy_table(source, target, table) for table in COPY_ORDER}
                for table, column in schema.IDENTITY_COLUMNS.items():
                    target.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
                    )
                for table in COPY_ORDER:
                    (copied,) = target.execute(f"SELECT count(*) FROM {table}").fetchone()
                    if copied != rows[table]:
                        raise CopyError(
                            f"{table}: {rows[table]} rows in SQLite but {copied} in PostgreSQL;"
                            " nothing was kept"
                        )
        finally:
            source.execute("ROLLBACK")
    finally:
        target.close()
    return CopyResult(rows)


def _copy_table(source: sqlite3.Connection, target, table: str) -> int:
    """Copy one table with COPY; return how many rows SQLite has."""
    columns = _columns(target, table)
    flags = {columns.index(name) for name in schema.BOOLEAN_COLUMNS.get(table, ())}
    listed = ", ".join(columns)
    (expected,) = source.execute(f"SELECT count(*) FROM {table}").fetchone()
    with target.raw.cursor().copy(f"COPY {table} ({listed}) FROM STDIN") as copy:
        for row in source.execute(f"SELECT {listed} FROM {table}"):
            if flags:
                row = tuple(bool(value) if i in flags else value for i, value in enumerate(row))
            copy.write_row(row)
    return expected


def table_counts(connection) -> dict[str, int]:
    """Rows per table of either kind of connection (what the copy compares)."""
    return {
        table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in transactions.TABLES
    }
