"""``chatd db``: online backup, integrity check and statistics of the database file.

All three work while the server runs. They open the file as it is, without
migrating it (a check must not change what it checks), and refuse a path
where there is no database rather than create an empty one.

The backup uses SQLite's online backup API in one step: it reads a single
consistent snapshot of the database inside one read transaction, which in
WAL mode never blocks the server's writer (the writer keeps committing to
the WAL meanwhile; the copy simply does not see those commits). The copy is
written next to the target as ``<target>.partial``, readable by its owner
only (it holds password hashes), switched to a self-contained rollback
journal, checked with ``quick_check``, synced, and only then renamed over the
target: a backup path holds either the previous good copy or the new one.
"""

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from chatd.frontends.line.render import format_timestamp
from chatd.storage import transactions
from chatd.storage.sqlite import schema


class DatabaseToolError(Exception):
    """The tool could not do its job; the message is for the operator."""


@dataclass(frozen=True)
class BackupResult:
    """What ``backup`` wrote."""

    path: Path
    bytes: int
    seconds: float


def open_existing(path: str | os.PathLike) -> sqlite3.Connection:
    """Open the database at ``path`` as it is: no migration, no journal-mode change."""
    if Path(path).is_dir():
        raise DatabaseToolError(f"{path} is a directory, not a database file")
    if not Path(path).is_file():
        raise DatabaseToolError(f"there is no database at {path}")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
    return connection


def integrity_problems(connection: sqlite3.Connection, quick: bool = False) -> list[str]:
    """What SQLite finds wrong with the database: pages, indexes, foreign keys, version.

    Empty when all is well. A file too damaged to read at all is one problem.
    """
    try:
        check = "quick_check" if quick else "integrity_check"
        problems = [row[0] for row in connection.execute(f"PRAGMA {check}")]
        if problems == ["ok"]:
            problems = []
        problems += [
            f"foreign key: {table} row {rowid} refers to a missing {parent} row"
            for table, rowid, parent, _ in connection.execute("PRAGMA foreign_key_check")
        ]
        version = schema.schema_version(connection)
    except sqlite3.DatabaseError as error:
        return [f"cannot read the database: {error}"]
    if version > schema.SCHEMA_VERSION:
        problems.append(
            f"schema version {version} is newer than this chatd's ({schema.SCHEMA_VERSION})"
        )
    return problems


def backup(source_path: str | os.PathLike, target_path: str | os.PathLike) -> BackupResult:
    """Copy the live database at ``source_path`` to ``target_path``, consistently."""
    started = time.monotonic()
    target = Path(target_path)
    if target.is_dir():
        raise DatabaseToolError(f"{target} is a directory; give the backup file's name")
    if not target.parent.is_dir():
        raise DatabaseToolError(f"directory {target.parent} does not exist")
    partial = target.with_name(target.name + ".partial")
    source = open_existing(source_path)
    try:
        partial.unlink(missing_ok=True)
        # Created empty and private first: SQLite then writes into it as it is.
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = integrity_problems(copy, quick=True)
        finally:
            copy.close()
        if problems:
            raise DatabaseToolError("the copy failed its check: " + "; ".join(problems))
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    return BackupResult(target, target.stat().st_size, time.monotonic() - started)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def stats_report(path: str | os.PathLike) -> str:
    """``chatd db stats``: the database's files, pages, and each table's rows and size."""
    connection = open_existing(path)
    try:
        connection.execute("BEGIN")  # one snapshot for every count
        stats = transactions.database_stats(connection)
        connection.execute("COMMIT")
    finally:
        connection.close()
    main = Path(path)
    wal = _file_size(main.with_name(main.name + "-wal"))
    lines = [
        f"database: {main}",
        f"schema version: {stats.schema_version} (this chatd: {schema.SCHEMA_VERSION})",
        f"file: {_size(_file_size(main))}, write-ahead log: {_size(wal)}",
        f"pages: {stats.pages} of {stats.page_size} bytes each, {stats.free_pages} free"
        f" ({_size(stats.free_pages * stats.page_size)} reclaimable by VACUUM)",
    ]
    return "\n".join(lines + _table_lines(stats))


# --- PostgreSQL (CHATD_DB=postgresql://...) ----------------------------------------
#
# Backups there are PostgreSQL's own business (pg_dump; docs/deploy.md).


def open_postgres(url: str):
    """Connect to the chatd database at ``url`` as it is: no migration."""
    from chatd.storage.postgres import schema as postgres_schema

    return postgres_schema.connect(url)


def postgres_problems(url: str) -> list[str]:
    """What is wrong with a chatd database on PostgreSQL: empty, newer, or unreadable.

    PostgreSQL checks its own pages and constraints; this reads every table.
    """
    from chatd.storage.postgres import schema as postgres_schema

    connection = open_postgres(url)
    try:
        version = postgres_schema.schema_version(connection)
        if version == 0:
            return ["not a chatd database (empty; `chatd db init` makes it one)"]
        if version > postgres_schema.SCHEMA_VERSION:
            return [
                f"schema version {version} is newer than this chatd's"
                f" ({postgres_schema.SCHEMA_VERSION})"
            ]
        transactions.database_stats(connection)
    finally:
        connection.close()
    return []


def postgres_stats_report(url: str) -> str:
    """``chatd db stats`` on PostgreSQL: the database's size, and each table's rows and size."""
    from chatd.storage.postgres import schema as postgres_schema

    connection = open_postgres(url)
    try:
        # One snapshot for every count.
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        stats = transactions.database_stats(connection)
        connection.execute("COMMIT")
    finally:
        connection.close()
    lines = [
        f"database: {postgres_schema.display_url(url)}",
        f"schema version: {stats.schema_version} (this chatd: {postgres_schema.SCHEMA_VERSION})",
        f"size: {_size(stats.pages * stats.page_size)} in blocks of {stats.page_size} bytes",
    ]
    return "\n".join(lines + _table_lines(stats))


def _table_lines(stats) -> list[str]:
    lines = []
    for table, table_stats in stats.tables.items():
        line = f"{table.replace('_', ' ')}: {table_stats.rows}"
        if table == "users":
            line += f" ({stats.banned_users} banned)"
        if table_stats.oldest is not None:
            line += (
                f", {format_timestamp(table_stats.oldest)}"
                f" to {format_timestamp(table_stats.newest)}"
            )
        if table_stats.bytes is not None:
            line += f", {_size(table_stats.bytes)}"
        lines.append(line)
    return lines
