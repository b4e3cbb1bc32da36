"""The server's database on PostgreSQL: named transactions run off the reactor thread.

The same interface and guarantees as ``chatd.storage.sqlite.database``: one
writer thread commits whatever is queued as one batch (one failing write
does not undo the others: a batch runs without savepoints, and if a write
fails it is rolled back and run again with a savepoint per write, which
saves two round trips a write in the usual batch where nothing fails), a
reader thread answers reads on a connection of its own, and a Deferred
returned by ``write`` fires on the reactor only after the batch holding
that write has been committed. psycopg's blocking calls run on those two
threads only, never on the reactor.

PostgreSQL is a server that can go away and come back. A write whose
connection fails fails with ``ChatError("unavailable")`` (never ``OK``:
when the connection breaks during ``COMMIT`` the batch may or may not have
been kept, and the client is told it was not acknowledged); ``unavailable``
then says why, and each thread connects again before its next work, and
every ``RETRY_SECONDS`` while idle, so service resumes by itself once the
server is back. A batch that PostgreSQL aborts for a deadlock or a
serialization failure (writers on other nodes, the admin command line) is
run again, whole, up to ``BATCH_ATTEMPTS`` times.
"""

import queue
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.core.errors import ChatError
from chatd.storage.dialect import PostgresConnection
from chatd.storage.postgres import schema
from chatd.storage.queued import STOP, QueuedWork, WriteFailed, answered, batch_runs
from chatd.storage.sqlite.database import MAX_BATCH, unavailable_error

# While the server cannot be reached, how often an idle thread tries again.
RETRY_SECONDS = 1.0
# How many times a batch aborted by a deadlock or serialization failure is run.
BATCH_ATTEMPTS = 5

log = Logger()


class _Retry(Exception):
    """The batch was aborted by PostgreSQL for a conflict with another writer: run it again."""


class _Stale(Exception):
    """The connection was found broken before anything of a batch was sent."""


class Database(QueuedWork):
    """The server's handle on a PostgreSQL database: a writer and a reader thread.

    ``path`` is the URL without its password, for logs. ``on_commit`` hears
    of each committed batch as in SQLite's; ``on_checkpoint`` is accepted
    and never called (PostgreSQL checkpoints by itself), and ``wal_bytes``
    stays 0.
    """

    SCHEMA_VERSION = schema.SCHEMA_VERSION

    def __init__(
        self,
        url: str,
        reactor: IReactorFromThreads,
        on_commit: Callable[[float, int], None] | None = None,
        on_checkpoint: Callable[[str, float, int], None] | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.url = url
        self.path = schema.display_url(url)
        self._reactor = reactor
        self._on_commit = on_commit
        self._retry_seconds = retry_seconds
        # Why the server cannot be used now (None while it can); set and
        # cleared by the database threads as connections break and come back.
        self.unavailable: str | None = None
        self.wal_bytes = 0
        self.batches_committed = 0
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed: Deferred | None = None

    # --- the interface the server uses ------------------------------------

    def open(self) -> Deferred:
        """Connect, migrate, start both threads; fire with the schema version found."""
        opened: Deferred = Deferred()
        writer = threading.Thread(
            target=self._run_writer, args=(opened,), name="chatd-db-writer", daemon=True
        )
        reader = threading.Thread(target=self._run_reader, name="chatd-db-reader", daemon=True)
        self._threads = [writer, reader]
        writer.start()
        return opened.addCallback(self._start_reader, reader)

    def _start_reader(self, found_version: int, reader: threading.Thread) -> int:
        reader.start()
        return found_version

    def write(self, body: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``body(connection, *args)`` in the next batch; fire after its commit.

        Fails with ``ChatError("unavailable")`` when PostgreSQL cannot be
        reached (or the connection broke before the commit was confirmed).
        """
        done: Deferred = Deferred()
        self._writes.put((body, args, done))
        return done

    # --- connections that break and come back ----------------------------------

    def _connect(self, role: str) -> PostgresConnection | None:
        """A new connection, or None (and ``unavailable`` set) when the server cannot be reached."""
        import psycopg

        try:
            connection = schema.connect(self.url)
        except psycopg.Error as error:
            self._lost(role, error)
            return None
        if self.unavailable is not None:
            self.unavailable = None
            self._reactor.callFromThread(
                log.info, "database {path} is reachable again ({role})", path=self.path, role=role
            )
        return connection

    def _lost(self, role: str, error: BaseException) -> None:
        """Note that the server cannot be used, logging it once per outage."""
        reason = " ".join(str(error).split()) or type(error).__name__
        first = self.unavailable is None
        self.unavailable = f"PostgreSQL cannot be reached ({role}): {reason}"
        if first:
            self._reactor.callFromThread(
                log.error,
                "database {path} is unavailable: {reason}; writes are refused"
                " (ERR unavailable) until it is back",
                path=self.path, reason=reason,
            )

    @staticmethod
    def _drop(connection: PostgresConnection | None) -> None:
        if connection is not None:
            with suppress(Exception):  # already broken: nothing to close cleanly
                connection.close()

    # --- the writer ------------------------------------------------------------

    def _run_writer(self, opened: Deferred) -> None:
        try:
            connection = schema.connect(self.url)
            found = schema.migrate(connection)
        except Exception:
            self._reactor.callFromThread(opened.errback, Failure())
            return
        self._reactor.callFromThread(opened.callback, found)
        stopping = False
        while not stopping:
            try:
                batch = [self._writes.get(timeout=self._retry_seconds)]
            except queue.Empty:
                if connection is None:
                    connection = self._connect("writer")
                continue
            while len(batch) < MAX_BATCH and batch[-1] is not STOP:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is STOP:
                stopping = True
                batch.pop()
            if not batch:
                continue
            if connection is None:
                connection = self._connect("writer")
            outcomes, connection = self._commit(connection, batch)
            self._reactor.callFromThread(self._report, outcomes)
        self._drop(connection)
        self._reactor.callFromThread(self._stopped, None)

    def _commit(
        self, connection: PostgresConnection | None, batch: list
    ) -> tuple[list, PostgresConnection | None]:
        """Run and commit one batch; its outcomes, and the connection to use next (None: broken)."""
        import psycopg

        if connection is None:
            refused = Failure(unavailable_error())
            return [(done, refused) for _, _, done in batch], None
        started = time.perf_counter()
        # Most batches have no failing write: they run without a savepoint per
        # write (two round trips a write fewer); the first failure rolls the
        # batch back and it runs again with them, so the others still commit.
        savepoints = False
        reconnected = False
        for attempt in range(BATCH_ATTEMPTS + 1):
            try:
                outcomes = self._run_batch(connection, batch, savepoints)
            except _Stale as stale:
                self._drop(connection)
                connection = None if reconnected else self._connect("writer")
                if connection is None:
                    if reconnected:
                        self._lost("writer", stale.__cause__ or stale)
                    refused = Failure(unavailable_error())
                    return [(done, refused) for _, _, done in batch], None
                reconnected = True
                continue
            except WriteFailed:
                savepoints = True
                continue
            except _Retry:
                if attempt + 1 < BATCH_ATTEMPTS:
                    continue
                failure = Failure(ChatError("server-error", "the database was too busy"))
                return [(done, failure) for _, _, done in batch], connection
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                self._lost("writer", error)
                self._drop(connection)
                refused = Failure(unavailable_error())
                return [(done, refused) for _, _, done in batch], None
            except Exception:
                failure = Failure()
                self._rollback(connection)
                return [(done, failure) for _, _, done in batch], connection
            self.batches_committed += 1
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, len(batch))
            return outcomes, connection
        raise AssertionError("unreachable")

    def _run_batch(self, connection: PostgresConnection, batch: list, savepoints: bool) -> list:
        """One attempt at a batch: BEGIN, the writes (each in a savepoint if asked), COMMIT.

        Without savepoints, runs of writes that have a form for many
        (``RUN_TOGETHER``) run as one, and a write that fails rolls everything
        back and raises ``WriteFailed``.
        """
        from psycopg import errors

        conflicts = (errors.DeadlockDetected, errors.SerializationFailure)
        outcomes: list[tuple[Deferred, Any]] = []
        try:
            connection.execute("BEGIN")
        except Exception as error:
            if connection.closed or _is_connection_error(error):
                # Broken while idle (PostgreSQL restarted, the session cut): nothing
                # of the batch was sent, so it may run on a new connection.
                raise _Stale() from error
            raise
        # With savepoints each write is a run of its own, in its savepoint.
        for entries, run in batch_runs(batch, together=not savepoints):
            if savepoints:
                connection.execute("SAVEPOINT write")
            try:
                results = run(connection)
            except conflicts:
                self._rollback(connection)
                raise _Retry() from None
            except Exception as error:
                if connection.closed or _is_connection_error(error):
                    raise
                if not savepoints:
                    self._rollback(connection)
                    raise WriteFailed() from None
                connection.execute("ROLLBACK TO SAVEPOINT write")
                results = [Failure()]
            if savepoints:
                connection.execute("RELEASE SAVEPOINT write")
            outcomes += answered(entries, results)
        try:
            connection.execute("COMMIT")
        except conflicts:
            self._rollback(connection)
            raise _Retry() from None
        return outcomes

    @staticmethod
    def _rollback(connection: PostgresConnection) -> None:
        with suppress(Exception):  # broken: the next batch finds out and reconnects
            connection.execute("ROLLBACK")

    # --- the reader ------------------------------------------------------------

    def _run_reader(self) -> None:
        import psycopg

        connection = self._connect("reader")
        while True:
            try:
                item = self._reads.get(timeout=self._retry_seconds)
            except queue.Empty:
                if connection is None:
                    connection = self._connect("reader")
                continue
            if item is STOP:
                break
            body, args, done = item
            if connection is None:
                connection = self._connect("reader")
            if connection is None:
                result = Failure(unavailable_error())
            else:
                try:
                    result = body(connection, *args)
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                    self._lost("reader", error)
                    self._drop(connection)
                    connection = None
                    result = Failure(unavailable_error())
                except Exception:
                    result = Failure()
            self._reactor.callFromThread(self._report, [(done, result)])
        self._drop(connection)
        self._reactor.callFromThread(self._stopped, None)


def _is_connection_error(error: BaseException) -> bool:
    """True for errors that mean the connection (not the statement) failed."""
    import psycopg

    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)) and not isinstance(
        error, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)
    )
