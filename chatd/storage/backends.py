"""Choosing SQLite or PostgreSQL from ``CHATD_DB``: a file path, or ``postgresql://...``.

Everything outside ``chatd.storage`` that needs the database itself (the
server, the admin command line) asks here, and gets the same interface
from either: a ``Database`` with ``write``/``read``/``close``, or for the
command line a connection and ``transaction(connection)``.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chatd.storage.dialect import Connection, PostgresConnection, is_postgres_url

__all__ = ["display_name", "is_postgres_url", "make_database", "transaction"]


def make_database(
    setting: str,
    reactor: Any,
    on_commit: Callable[[float, int], None] | None = None,
    on_checkpoint: Callable[[str, float, int], None] | None = None,
):
    """The server's ``Database`` for ``CHATD_DB``: SQLite's or PostgreSQL's."""
    if is_postgres_url(setting):
        from chatd.storage.postgres.database import Database as PostgresDatabase

        return PostgresDatabase(setting, reactor, on_commit=on_commit)
    from chatd.storage.sqlite.database import Database as SQLiteDatabase

    return SQLiteDatabase(setting, reactor, on_commit=on_commit, on_checkpoint=on_checkpoint)


def display_name(setting: str) -> str:
    """``CHATD_DB`` as logs and messages may show it: a URL's password hidden."""
    if is_postgres_url(setting):
        from chatd.storage.postgres.schema import display_url

        return display_url(setting)
    return setting


@contextmanager
def transaction(connection: Connection) -> Iterator[Connection]:
    """Run the body as one write transaction on either kind of connection."""
    if isinstance(connection, PostgresConnection):
        from chatd.storage.postgres.schema import transaction as postgres_transaction

        with postgres_transaction(connection):
            yield connection
    else:
        from chatd.storage.sqlite.schema import transaction as sqlite_transaction

        with sqlite_transaction(connection):
            yield connection
